"""Tasks running while a new release is deployed carry on: every history an earlier release recorded replays against
today's orchestrators at every episode, as the Durable extension replays it after a deployment (upgrade_replay.py).

A failure here means: a task started by that release and running when this code is deployed would fail
("Non-Deterministic workflow detected", or the orchestrator raising on an old activity result). Keep the change
history-compatible (schedule the new action after the old ones, read old results with defaults), or, when that is
not possible, say so in the release notes (docs/deploy.md "Deploying while tasks run") and record new histories.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from devhost.functions import index_app
from tests.orchestrations import upgrade_replay as u


@pytest.fixture(scope="module")
def orchestrators() -> dict[str, Callable[..., Any]]:
    import function_app

    return index_app(function_app.app).orchestrators


def test_histories_of_every_orchestrator_are_recorded() -> None:
    """The newest recording takes every orchestrator the app registers through its episodes, so a change to any of
    them is checked; an older one may lack an orchestrator added since (harmless: no task of that release runs it),
    but names none the app lost (a renamed orchestrator is a change Azure cannot replay: its instances would find
    no function)."""
    import function_app

    names = set(index_app(function_app.app).orchestrators)
    assert u.recordings(), f"no recorded histories in {u.HISTORIES}: run scripts/record_histories.py"
    docs = {path: u.load(path) for path in u.recordings()}
    for path, doc in docs.items():
        recorded = {str(i["name"]) for i in doc["instances"]}
        assert recorded <= names, (path.name, "orchestrators gone", sorted(recorded - names))
    newest = max(docs, key=lambda path: str(docs[path]["recorded_at"]))
    per_name: dict[str, int] = {}
    for cut in u.cuts(newest):
        per_name[cut.name] = per_name.get(cut.name, 0) + 1
    assert set(per_name) == names, (newest.name, "record the newest histories again", sorted(names - set(per_name)))


def test_the_newest_recording_takes_a_shard_through_two_waits_of_exits_69() -> None:
    """A shard group's rule for worker exits 69 (orchestrations/shards.py "Unavailable exits": no attempt spent within
    a wait, and a second wait after an attempt past start-up) is replayed too: the newest recording holds a shard
    whose worker exited 69, crashed after a result, exited 69 again and then ran (scripts/record_histories.py
    ``BUSY_STORAGE_ATTEMPTS``). The recordings up to 17da8fc's held no exit 69 at all."""
    from scripts.record_histories import shard_exits, waited_out

    name, doc = _newest()
    exits = shard_exits(doc["instances"])
    assert any(waited_out(codes)[1] for codes in exits.values()), (name, "record the newest histories again", exits)


def test_the_newest_recording_holds_every_execution_that_went_on_as_new_to_its_end() -> None:
    """An execution replaced by ``continue_as_new`` is recorded up to that action (scripts/record_histories.py
    ``EXECUTIONS``), so the episode that read its last poll result and went on is replayed too: 17da8fc's recording
    lacked it in 133 of 161 such shard-group executions, and with it the exits those polls reported."""
    from devhost import history as h

    name, doc = _newest()
    executions: dict[str, list[dict[str, Any]]] = {}
    for inst in doc["instances"]:  # in the order of their first events, per instance (record_histories.main)
        executions.setdefault(str(inst["instance_id"]), []).append(inst)
    ended = (h.EXECUTION_COMPLETED, h.EXECUTION_FAILED, h.EXECUTION_TERMINATED)
    cut_short = [f"{inst['name']} {iid} {inst['execution_id']}" for iid, runs in executions.items()
                 for inst in runs[:-1]  # the last may still run; an earlier one went on as new or ended
                 if not (inst["recorded"] and inst["recorded"][-1][0] == h.CONTINUE_AS_NEW)
                 and not any(e["EventType"] in ended for e in inst["history"])]
    assert sum(len(runs) - 1 for runs in executions.values()) > 50
    assert not cut_short, (name, "record the newest histories again", len(cut_short), cut_short[:5])


def _newest() -> tuple[str, dict[str, Any]]:
    docs = {path: u.load(path) for path in u.recordings()}
    newest = max(docs, key=lambda path: str(docs[path]["recorded_at"]))
    return newest.name, docs[newest]


@pytest.mark.parametrize("path", u.recordings(), ids=lambda p: p.name.removesuffix(".json.gz"))
def test_recorded_histories_replay_at_every_episode(path: Any, orchestrators: dict[str, Callable[..., Any]]) -> None:
    failures = []
    checked = 0
    for cut in u.cuts(path):
        problem = u.verdict(cut, u.replay(cut, orchestrators))
        checked += 1
        if problem:
            failures.append(f"{cut}: {problem}")
    assert checked > 50
    assert not failures, f"{len(failures)} of {checked} deployment moments would fail a running task:\n" + \
        "\n".join(failures[:20])
