"""Activities queued before a deployment run with today's code: every input an earlier release scheduled (the
recorded histories, tests/orchestrations/histories) must hold every key today's activity reads unconditionally.

Azure does not drain the task hub when a release is deployed: a work item already in the work-item queue is run by
whichever code the worker has when it is dequeued, and an orchestration replaying its old history schedules new
activities with inputs it builds from old activity results (Microsoft's "Versioning in Durable Functions",
MicrosoftDocs/azure-docs articles/azure-functions/durable/durable-functions-versioning.md, "Change activity or entity
function signatures": a change of an activity's name, input or output can break in-flight instances). test_upgrade_replay.py checks the orchestrators (what
they schedule, and that they read every old result recorded in the history without raising: it replays each
history to its end, so every ``TaskCompleted`` result is read by today's orchestrator; nothing more is needed for
outputs). Nothing ran the activities on the old inputs. A ``payload["k"]`` on a key an old input lacks is a
``KeyError`` after every retry, and the task fails. Read a key added since with ``.get`` and the old meaning as its
default ("an input scheduled by a release before X"), and mark it ``NotRequired`` in core/contracts.py.

The reads are found in the source (payload_reads.py: the registered function and the project's functions it hands
the payload to); where an activity's pure logic parses a part of its input (the task request, the repeat options)
that parser is called on every recorded value as well.
"""
from __future__ import annotations

import json
from typing import Any, Callable

import pytest

from core import contracts as c
from devhost import history as h
from devhost.functions import index_app
from tests.orchestrations import payload_reads as p
from tests.orchestrations import upgrade_replay as u

ACTIVITIES = p.registered_activities()
READS = {name: p.activity_reads(*where) for name, where in ACTIVITIES.items()}
INPUT_TYPES = {name: getattr(c, p.input_type(*where)) for name, where in ACTIVITIES.items()}
IDS: Callable[[Any], str] = lambda path: path.name.removesuffix(".json.gz")
# Registered activities that today's orchestrators schedule only when they replay a result an earlier release
# recorded: no new task reaches them, so no new recording can (and none of the recordings here holds the first four:
# they were replaced before the first recording). Every other activity is scheduled by the newest recording.
LEGACY = {
    c.ENUMERATE: "replaced by plan_listing / list_images_part / write_shard_manifests (ca02c35); no orchestrator "
                 "calls it",
    c.MERGE: "replaced by merge_part / merge_combine (fa858fb); no orchestrator calls it",
    c.REMOVE_REPEATS: "replaced by prepare_removal and the fan-in (fa858fb); no orchestrator calls it",
    c.EXPORTS_ZOONIVERSE: "orchestrations/exports.py calls it for an exports_combine result without zooniverse_parts, "
                          "which today's exports_combine always sets (activities/exportparts.py, since 93d5ebc)",
    c.EXPORTS: "orchestrations/exports.py calls it for a merge output without parts or exports_fan_out (today's "
               "merge_combine always sets exports_parts and exports_one_part), for a conflict without redo (today's "
               "exports_combine always names the parts to redo, since 27f1070), or for a conflict again after the "
               "redo, which the redo's given first facts are there to prevent",
}


def _problems(name: str, payload: Any) -> list[str]:
    """What today's activity ``name`` would fail on (or its contract refuse) with ``payload``."""
    if name not in ACTIVITIES:
        return [f"no activity {name!r} is registered (a queued call of it fails: the function is gone)"]
    found = [f"reads {'.'.join(r.path)} ({r.where})" for r in p.check(READS[name], payload)]
    found += [f"{INPUT_TYPES[name].__name__} requires {key}" for key in p.missing_required(INPUT_TYPES[name], payload)]
    return found


def _report(failures: dict[tuple[str, str], str]) -> str:
    return f"{len(failures)} incompatibilities:\n" + "\n".join(
        f"{name}: {problem} (e.g. {instance})" for (name, problem), instance in sorted(failures.items())[:30])


def test_the_reads_are_followed_into_the_code_the_activities_call() -> None:
    """The analysis is not vacuous: it follows the payload into run_* helpers and other modules, and leaves out the
    keys read with ``.get`` or only after checking them; it finds every activity the app registers; and every
    activity's payload use is one it understands."""
    import function_app

    assert set(ACTIVITIES) == set(index_app(function_app.app).activities)
    merge_part = {".".join(r.path) for r in READS[c.MERGE_PART].required}
    assert {"task_id", "part", "first_shard", "shards"} <= merge_part  # run_merge_part, a helper it calls
    assert not merge_part & {"variant", "remove", "remove_blob", "search"}  # .get, or after `"remove_blob" in`
    assert "plan.files.[].etag" in {".".join(r.path) for r in READS[c.RESULTS_ZIP_COMBINE].required}  # adapters/
    assert not {"search", "searched"} & {".".join(r.path) for r in READS[c.RANK_REPEATS].required}
    escapes = {name: sorted(r.escapes) for name, r in READS.items() if r.escapes}
    assert not escapes, f"payloads handed where payload_reads.py cannot follow them: {escapes}"


def test_typeddict_required_keys_are_read_correctly() -> None:
    """``__required_keys__`` is wrong under ``from __future__ import annotations`` on Python 3.11 (every key is
    required); payload_reads.required_keys reads the annotations themselves."""
    assert p.required_keys(c.MergePartInput) == {"task_id", "part", "first_shard", "shards"}
    assert p.required_keys(c.ShardCounts) == set()  # total=False
    assert {"coco", "images"} <= p.required_keys(c.ExportsOutput)  # inherited from ExportsRef, and its own
    assert "events" not in p.required_keys(c.ExportsOutput)


def test_the_newest_recording_schedules_every_activity_a_new_task_can_reach() -> None:
    """An activity no recording schedules has no old input to be checked against here: a later change to what it
    reads would go unseen. The newest recording (scripts/record_histories.py) schedules every registered activity but
    the ``LEGACY`` ones, and none of those (a legacy one scheduled anew is not legacy: take it off the list)."""
    docs = {path: u.load(path) for path in u.recordings()}
    newest = max(docs, key=lambda path: str(docs[path]["recorded_at"]))
    recorded = {name for name, _, _ in p.scheduled(docs[newest])}
    assert set(LEGACY) <= set(ACTIVITIES), sorted(set(LEGACY) - set(ACTIVITIES))
    assert not recorded & set(LEGACY), (newest.name, "scheduled, so not legacy", sorted(recorded & set(LEGACY)))
    unrecorded = set(ACTIVITIES) - set(LEGACY) - recorded
    assert not unrecorded, (newest.name, "widen scripts/record_histories.py's scenario to schedule",
                            sorted(unrecorded))


@pytest.mark.parametrize("path", u.recordings(), ids=IDS)
def test_activities_accept_the_inputs_earlier_releases_scheduled(path: Any) -> None:
    failures: dict[tuple[str, str], str] = {}
    checked = 0
    for name, payload, instance in p.scheduled(u.load(path)):
        checked += 1
        for problem in _problems(name, payload):
            failures.setdefault((name, problem), instance)
    assert checked > 50
    assert not failures, _report(failures)


@pytest.mark.parametrize("path", u.recordings(), ids=IDS)
def test_parsers_accept_the_request_and_options_earlier_releases_scheduled(path: Any) -> None:
    """The enumeration activities parse ``request`` with TaskRequest.from_dict, the repeat searches ``options``
    with RepeatOptions.from_dict: a field made required or a check made stricter would refuse an old one."""
    from core.repeats import RepeatOptions
    from core.requests import TaskRequest

    parsed = 0
    for name, payload, instance in p.scheduled(u.load(path)):
        if not isinstance(payload, dict):
            continue
        if "request" in payload:
            TaskRequest.from_dict(payload["request"])
            parsed += 1
        if payload.get("options") is not None:
            RepeatOptions.from_dict(payload["options"])
            parsed += 1
    assert parsed > 0


@pytest.fixture(scope="module")
def orchestrators() -> dict[str, Callable[..., Any]]:
    import function_app

    return index_app(function_app.app).orchestrators


@pytest.mark.parametrize("path", u.recordings(), ids=IDS)
def test_activities_accept_what_todays_orchestrators_schedule_from_old_results(
        path: Any, orchestrators: dict[str, Callable[..., Any]]) -> None:
    """After a deployment, today's orchestrator schedules its next activities with inputs it builds from the old
    results in the history (an ExportsCombineInput carries the recorded ExportsPartOutputs): at every deployment
    moment of every recording, the activities it schedules anew must accept them."""
    failures: dict[tuple[str, str], str] = {}
    scheduled = 0
    for cut in u.cuts(path):
        if cut.failed_here:
            continue
        state = u.replay(cut, orchestrators)
        actions = [a for a in h.flatten(state.get("actions") or []) if a.get("actionType") != h.WAIT_FOR_EXTERNAL_EVENT]
        for action in actions[len(cut.recorded):]:
            if action.get("actionType") not in (h.CALL_ACTIVITY, h.CALL_ACTIVITY_WITH_RETRY):
                continue
            scheduled += 1
            payload = action.get("input")
            payload = json.loads(payload) if isinstance(payload, str) else payload
            for problem in _problems(str(action.get("functionName")), payload):
                failures.setdefault((str(action.get("functionName")), problem), str(cut))
    assert scheduled > 20
    assert not failures, _report(failures)
