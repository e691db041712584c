"""Tasks running while a new release is deployed carry on: every history an earlier release recorded replays against
today's orchestrators at every episode, as the Durable extension replays it after a deployment (upgrade_replay.py).

A failure here means: a task started by that release and running when this code is deployed would fail
("Non-Deterministic workflow detected", or the orchestrator raising on an old activity result). Keep the change
history-compatible (schedule the new action after the old ones, read old results with defaults), or, when that is
not possible, say so in the release notes (README "Deploying while tasks run") and record new histories.
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
