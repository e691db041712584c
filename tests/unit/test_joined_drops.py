"""A request that joins a running task gets its own done file when the run ends, whichever side comes first
(adapters.joined_drops): the joining starter registers, then reads the run's ended marker; the run's end writes the
marker, then lists the registry. Every interleaving of their storage calls is run here, one call at a time."""
from __future__ import annotations

import itertools
import json
import threading
from typing import Any, Callable

import pytest

from adapters import joined_drops
from gpu_batch import layout

TASK = "task-0123456789abcdef0123"
RUN = "r261207210000ab12"
STATE = "trapbatch"
DROP = "site-b/survey.json"
STATUS = {"stage": "completed", "started": "2026-12-07T21:00:00+00:00", "images": 3, "failed": 0}


class Store:
    """The ``BlobStore`` calls adapters.joined_drops makes, over blobs kept here."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], Any] = {}

    def write_json(self, container: str, name: str, doc: Any) -> None:
        self.blobs[(container, name)] = json.loads(json.dumps(doc))

    def read_json_or_none(self, container: str, name: str) -> Any:
        return self.blobs.get((container, name))

    def list_names(self, container: str, prefix: str = "") -> list[str]:
        return sorted(name for (c, name) in self.blobs if c == container and name.startswith(prefix))


def done_of(store: Store, drop: str = DROP) -> Any:
    return store.read_json_or_none(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"))


class Turns:
    """Runs each side's storage calls one at a time, in the order ``schedule`` names the sides ("J" the joining
    drop, "E" the run's end); a side that has finished is passed over, and past the schedule's end the sides go on
    as they come (still one call at a time)."""

    def __init__(self, store: Store, schedule: tuple[str, ...]) -> None:
        self.store, self.schedule, self.pos = store, schedule, 0
        self.finished: set[str] = set()
        self.cond = threading.Condition()

    def call(self, side: str, method: str, *args: Any) -> Any:
        with self.cond:
            while True:
                while self.pos < len(self.schedule) and self.schedule[self.pos] in self.finished:
                    self.pos += 1
                if self.pos >= len(self.schedule) or self.schedule[self.pos] == side:
                    break
                self.cond.wait()
            value = getattr(self.store, method)(*args)
            self.pos += 1
            self.cond.notify_all()
            return value

    def finish(self, side: str) -> None:
        with self.cond:
            self.finished.add(side)
            self.cond.notify_all()


class Side:
    """One side's view of the store: each call waits for its turn."""

    def __init__(self, turns: Turns, side: str) -> None:
        self.turns, self.side = turns, side

    def write_json(self, *args: Any) -> None:
        self.turns.call(self.side, "write_json", *args)

    def read_json_or_none(self, *args: Any) -> Any:
        return self.turns.call(self.side, "read_json_or_none", *args)

    def list_names(self, *args: Any) -> list[str]:
        return list(self.turns.call(self.side, "list_names", *args))


def interleaved(schedule: tuple[str, ...], join: Callable[..., Any]) -> Store:
    """The joining drop (``join``) and the run's end (``joined_drops.end_run``) run side by side, their calls in the
    order ``schedule`` gives."""
    store = Store()
    turns = Turns(store, schedule)
    errors: list[BaseException] = []

    def side(name: str, work: Callable[[Any], Any]) -> None:
        try:
            work(Side(turns, name))
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            errors.append(exc)
        finally:
            turns.finish(name)

    threads = [threading.Thread(target=side, args=("J", lambda s: join(s, STATE, TASK, RUN, DROP))),
               threading.Thread(target=side, args=("E", lambda s: joined_drops.end_run(s, STATE, TASK, RUN,
                                                                                       STATUS)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return store


SCHEDULES = sorted(set(itertools.product("JE", repeat=7)))


def test_the_joined_drop_gets_its_done_file_in_every_interleaving_with_the_runs_end() -> None:
    """Register, then read the marker; write the marker, then list: in whichever order their calls come, one side
    writes the done file, with the run's final status as the run writes it beside its own drop."""
    for schedule in SCHEDULES:
        store = interleaved(schedule, joined_drops.join)
        assert done_of(store) == {"id": TASK, **STATUS}, "".join(schedule)


def test_reading_the_marker_before_registering_misses_the_run_s_end_in_some_interleaving() -> None:
    """Why the order: a joining drop that read the marker first (none yet), then registered after the run had
    listed the registry, got no done file from either side. The interleavings above do reach that race."""
    def marker_first(store: Any, container: str, task_id: str, run: str, drop: str) -> None:
        status = joined_drops.ended_status(store, container, task_id, run)
        store.write_json(container, layout.joined_drop_blob(task_id, run, drop), {"drop": drop})
        if status is not None:
            store.write_json(layout.INCOMING_CONTAINER, layout.drop_answer_blob(drop, "done"), {"id": task_id,
                                                                                                 **status})

    missed = [schedule for schedule in SCHEDULES if done_of(interleaved(schedule, marker_first)) is None]
    assert missed


def test_joining_a_run_that_ended_writes_the_done_file_at_once_and_says_so() -> None:
    store = Store()
    assert joined_drops.end_run(store, STATE, TASK, RUN, STATUS) == []  # nobody joined yet: the marker only
    assert joined_drops.join(store, STATE, TASK, RUN, DROP) == STATUS
    assert done_of(store) == {"id": TASK, **STATUS}


def test_the_runs_end_answers_each_drop_that_joined_it_and_a_retried_end_writes_the_same() -> None:
    store = Store()
    drops = [DROP, "other.json", DROP]  # the same request joining twice (an event delivered again) is one entry
    for drop in drops:
        assert joined_drops.join(store, STATE, TASK, RUN, drop) is None
    assert done_of(store) is None and done_of(store, "other.json") is None
    assert sorted(joined_drops.end_run(store, STATE, TASK, RUN, STATUS)) == sorted({DROP, "other.json"})
    first = dict(store.blobs)
    assert sorted(joined_drops.end_run(store, STATE, TASK, RUN, STATUS)) == sorted({DROP, "other.json"})
    assert store.blobs == first and done_of(store, "other.json") == {"id": TASK, **STATUS}


def test_a_later_run_of_the_task_answers_only_the_drops_that_joined_it() -> None:
    """The registry and the marker are the run's: a re-run (or a resume) of the task does not write its end beside a
    request that joined the earlier run (which keeps that run's end), and the earlier run's marker does not tell a
    request joining the later run that the task ended."""
    later, rerun_status = "r261208090000cd34", {**STATUS, "images": 5}
    store = Store()
    joined_drops.join(store, STATE, TASK, RUN, DROP)
    joined_drops.end_run(store, STATE, TASK, RUN, STATUS)
    assert joined_drops.join(store, STATE, TASK, later, "late.json") is None  # RUN's marker says nothing of it
    assert joined_drops.end_run(store, STATE, TASK, later, rerun_status) == ["late.json"]
    assert done_of(store) == {"id": TASK, **STATUS}
    assert done_of(store, "late.json") == {"id": TASK, **rerun_status}


def test_the_run_that_resumes_a_terminated_one_answers_the_drops_that_had_joined_it() -> None:
    """A terminated run writes no marker and no done file; the run that resumed its work (``ended_runs``: its input's
    ``ends_run``, ``ends_earlier``) writes those of the requests that had joined it, with its own end, once each;
    a run it did not end keeps its joiners (their files are that run's to write)."""
    resumed, ended, other = "r261208090000cd34", "r261207230000ef56", "r261207220000aa11"
    store = Store()
    joined_drops.join(store, STATE, TASK, RUN, DROP)  # RUN is then terminated: its end never comes
    joined_drops.join(store, STATE, TASK, ended, "earlier.json")
    joined_drops.join(store, STATE, TASK, other, "elsewhere.json")
    joined_drops.join(store, STATE, TASK, resumed, DROP)  # the same request joined the resumed run too
    answered = joined_drops.end_run(store, STATE, TASK, resumed, STATUS, [ended, RUN, resumed])
    assert sorted(answered) == sorted([DROP, "earlier.json"])
    assert done_of(store) == done_of(store, "earlier.json") == {"id": TASK, **STATUS}
    assert done_of(store, "elsewhere.json") is None
    assert joined_drops.ended_status(store, STATE, TASK, RUN) is None  # no marker for a run that ended unanswered


def test_a_registry_entry_naming_no_dropped_request_is_passed_over() -> None:
    store = Store()
    prefix = layout.joined_drops_prefix(TASK, RUN)
    store.write_json(STATE, prefix + "x.json", {"drop": "../tasks/other/request.done.json"})  # an answer, no request
    store.write_json(STATE, prefix + "y.json", ["not", "an", "entry"])
    joined_drops.join(store, STATE, TASK, RUN, DROP)
    assert joined_drops.end_run(store, STATE, TASK, RUN, STATUS) == [DROP]
    assert [name for (c, name) in store.blobs if c == layout.INCOMING_CONTAINER] == \
        [layout.drop_answer_blob(DROP, "done")]


@pytest.mark.parametrize("run", ["", "r1", "../r261207210000ab12", "r261207210000ab12/x"])
def test_the_registry_is_named_only_for_a_run_id(run: str) -> None:
    with pytest.raises(ValueError):
        layout.joined_drops_prefix(TASK, run)
    with pytest.raises(ValueError):
        layout.run_ended_blob(TASK, run)
