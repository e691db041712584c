"""Which results zip a manifest names, and when the zips of earlier builds may go (``core.zip_builds``): never while a
link handed out for them may still be used."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core import stall
from core.settings import MAX_BUSY_RETRY_ATTEMPTS, MAX_LINK_DAYS
from core.zip_builds import (KEEP_SUPERSEDED_S, ORPHAN_S, STALE_WORK_S, SWEEP_AFTER_S, expired, named_zip, new_build,
                             orphans, replacing, without)
from gpu_batch import layout

TASK = "task-a"
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
LEGACY, B1, B2, B3 = (layout.results_zip_blob(TASK, b) for b in ("", "0000aaaa", "0000bbbb", "0000cccc"))


def _manifest(name: str, previous: list[dict[str, str]] | None = None) -> dict[str, Any]:
    made: dict[str, Any] = {"task_id": TASK, "zip": name, "bytes": 1, "files": {}}
    if previous is not None:
        made["previous"] = previous
    return made


def test_the_bounds_are_a_links_longest_life_and_a_running_builds() -> None:
    """A replaced zip stays the longest a link minted for it may live (7 days, plus the slack for the GET that read
    the manifest just before and for clocks); a zip no manifest names, that and the longest a build takes to name
    it (the ~22 h its work folders are given)."""
    assert STALE_WORK_S == MAX_BUSY_RETRY_ATTEMPTS * (2 * stall.FUNCTION_TIMEOUT_S + stall.BUSY_MAX_DELAY_S) + \
        stall.SLACK_S
    assert 20 * 3600 < STALE_WORK_S < 24 * 3600
    assert KEEP_SUPERSEDED_S == MAX_LINK_DAYS * 86_400 + stall.SLACK_S > 7 * 86_400
    assert ORPHAN_S == STALE_WORK_S + KEEP_SUPERSEDED_S


def test_a_builds_sweep_comes_once_all_it_may_leave_can_go() -> None:
    """A build's sweep (its end + ``SWEEP_AFTER_S``) comes after the bound of every zip it could find: the ones that
    build replaced at its end (``KEEP_SUPERSEDED_S``), and those a terminated build committed, or replaced in the
    manifest, up to ``STALE_WORK_S`` after it (its step runs on beside the next build: ``ORPHAN_S`` after that
    commit, ``KEEP_SUPERSEDED_S`` after that replacement)."""
    assert SWEEP_AFTER_S == STALE_WORK_S + ORPHAN_S
    assert SWEEP_AFTER_S >= max(KEEP_SUPERSEDED_S, STALE_WORK_S + ORPHAN_S, STALE_WORK_S + KEEP_SUPERSEDED_S)
    assert 8 * 86_400 < SWEEP_AFTER_S < 9 * 86_400


def test_builds_are_random_hex_that_a_zip_name_reads_back() -> None:
    builds = {new_build() for _ in range(50)}
    assert len(builds) == 50
    assert all(layout.results_zip_build(TASK, layout.results_zip_blob(TASK, b)) == b for b in builds)


@pytest.mark.parametrize("manifest, name", [
    (_manifest(B1), B1),
    (_manifest(LEGACY), LEGACY),  # an earlier release's: every build wrote the one name
    ({"task_id": TASK, "files": {}}, LEGACY),
    (_manifest(layout.results_zip_blob("task-b", "0000aaaa")), LEGACY),  # another generation's: not this one's
    (_manifest(layout.results_blob(TASK)), LEGACY),  # no zip: never linked by it
    (_manifest(7), LEGACY),  # type: ignore[arg-type]
    (None, LEGACY), ([], LEGACY),
])
def test_the_zip_a_manifest_names(manifest: Any, name: str) -> None:
    assert named_zip(manifest, TASK) == name


def test_a_manifest_replacing_another_keeps_the_replaced_zip_for_its_links() -> None:
    """The first build's manifest keeps nothing; the next keeps the first's zip, replaced now; a third keeps both;
    an earlier release's manifest (no ``previous``) hands its one name on; the zip written again (a combine retried)
    is not kept beside itself."""
    assert replacing(None, TASK, B1, NOW) == ([], [])
    kept, gone = replacing(_manifest(B1), TASK, B2, NOW)
    assert (kept, gone) == ([{"zip": B1, "superseded": NOW.isoformat()}], [])
    later = NOW + timedelta(days=2)
    kept, gone = replacing(_manifest(B2, kept), TASK, B3, later)
    assert (kept, gone) == ([{"zip": B1, "superseded": NOW.isoformat()},
                             {"zip": B2, "superseded": later.isoformat()}], [])
    assert replacing(_manifest(LEGACY), TASK, B1, NOW) == ([{"zip": LEGACY, "superseded": NOW.isoformat()}], [])
    assert replacing(_manifest(B1, [{"zip": B2, "superseded": NOW.isoformat()}]), TASK, B1, NOW) == (
        [{"zip": B2, "superseded": NOW.isoformat()}], [])
    # a terminated build's manifest written after the next build's: the next build's zip is kept, not lost
    kept, _ = replacing(_manifest(B2), TASK, B1, later)
    assert kept == [{"zip": B2, "superseded": later.isoformat()}]


def test_a_replaced_zip_goes_only_once_every_link_to_it_has_ended() -> None:
    """At the bound's end, kept; a second past it, to delete (and out of the list)."""
    replaced = NOW - timedelta(seconds=KEEP_SUPERSEDED_S)
    found = _manifest(B2, [{"zip": B1, "superseded": replaced.isoformat()}])
    assert replacing(found, TASK, B3, NOW) == ([{"zip": B1, "superseded": replaced.isoformat()},
                                               {"zip": B2, "superseded": NOW.isoformat()}], [])
    assert expired(found, TASK, NOW) == []
    later = NOW + timedelta(seconds=1)
    assert replacing(found, TASK, B3, later) == ([{"zip": B2, "superseded": later.isoformat()}], [B1])
    assert expired(found, TASK, later) == [B1]


@pytest.mark.parametrize("entry", [
    {"zip": B1, "superseded": "yesterday"}, {"zip": B1}, {"zip": B1, "superseded": "2026-01-01T00:00:00"},  # naive
])
def test_a_replaced_zip_whose_time_does_not_read_is_kept_as_if_replaced_now(entry: dict[str, str]) -> None:
    """Never deleted on a time that does not read: it is written again as replaced now, and goes a week later."""
    found = _manifest(B2, [entry])
    far = NOW + timedelta(days=365)
    assert expired(found, TASK, far) == []
    kept, gone = replacing(found, TASK, B3, NOW)
    assert gone == [] and {"zip": B1, "superseded": NOW.isoformat()} in kept


def test_odd_entries_are_not_kept_and_a_zip_listed_twice_keeps_its_later_time() -> None:
    old, new = NOW - timedelta(days=30), NOW - timedelta(days=1)
    found = _manifest(B3, [{"zip": B1, "superseded": old.isoformat()}, {"zip": B1, "superseded": new.isoformat()},
                           {"zip": layout.results_blob(TASK), "superseded": old.isoformat()}, "odd", {"zip": 3}])
    assert expired(found, TASK, NOW) == []
    assert replacing(found, TASK, B2, NOW)[0] == [{"zip": B1, "superseded": new.isoformat()},
                                                  {"zip": B3, "superseded": NOW.isoformat()}]


def test_a_manifest_without_the_deleted_zips() -> None:
    found = _manifest(B3, [{"zip": B1, "superseded": NOW.isoformat()}, {"zip": B2, "superseded": NOW.isoformat()}])
    assert without(found, TASK, [B1]) == {**found, "previous": [{"zip": B2, "superseded": NOW.isoformat()}]}
    assert without(found, TASK, [LEGACY]) is None and without(_manifest(B3), TASK, [B1]) is None
    assert without(None, TASK, [B1]) is None


def test_a_zip_no_manifest_names_goes_once_no_build_can_name_it_and_no_link_use_it() -> None:
    """Only zips of this generation (not the manifest, not another file), neither named nor kept, older than
    ``ORPHAN_S``; with no manifest at all, none was ever linked."""
    old = NOW - timedelta(seconds=ORPHAN_S + 1)
    young = NOW - timedelta(seconds=ORPHAN_S - 1)
    listed = [(LEGACY, old), (B1, old), (B2, old), (B3, young), (layout.results_zip_manifest_blob(TASK), old),
              (layout.results_zip_folder(TASK) + "notes.txt", old)]
    manifest = _manifest(B2, [{"zip": LEGACY, "superseded": NOW.isoformat()}])
    assert orphans(listed, manifest, TASK, NOW) == [B1]
    assert orphans(listed, None, TASK, NOW) == sorted([LEGACY, B1, B2])
