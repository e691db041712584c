"""A task's results zips, one per build: which one the manifest names, and which earlier builds' zips stay.

Why one zip per build (``layout.results_zip_blob``): a link is for a blob name (``adapters.share_links``), and a
terminated build's step runs on beside the next build (README, the terminate row); under one name for all, its late
commit replaced the zip that the next build's link, already handed out, served. Now a build commits its own name and
then its manifest names it (``adapters.results_bundle.write_manifest``); ``GET .../results`` links only the zip its
manifest names (``named_zip``), and no other build ever writes that name.

When the earlier zips go: a zip gets links only while a manifest names it (``api.after_task._zip_state``), and a link
is valid at most ``core.settings.MAX_LINK_DAYS`` from when it was minted (``share_links.read_links``). So the manifest
that replaces another keeps the replaced zip in its ``previous`` list, with when it was replaced, and that zip is
deleted only ``KEEP_SUPERSEDED_S`` later, at the end of the next build, a ``GET .../results`` (``expired``) or a sweep.
Why not delete it at once, or at the next build's clean: a partner given the link yesterday, downloading gigabytes
now, would have the download cut (404) and the link dead days before the expiry its answer promised
(``links.expires``); why not keep the previous build's only: two builds in a week (a re-render's CSV, then a repeat
removal) and the first's links, still valid, died. The cost: a zip's storage for up to a week after it was replaced.

A zip no manifest names (an "orphan": a one-pass build retried, whose first attempt's zip was never named; a build
that ended between its commit and its manifest; a zip an earlier release's build replaced in the manifest without
keeping it in ``previous``) goes once older than ``ORPHAN_S``: never while its build may still name it.

Who deletes them: a later build's end and a ``GET .../results`` of the same generation, whichever comes first, and at
the latest the sweep each build starts at its end (``orchestrations.zip_sweep``, ``SWEEP_AFTER_S`` later). Why the
sweep: without it a replaced zip stayed, its storage paid, for ever when no one came back a week later (a partner who
downloaded the new zip and was done), and so did every zip of a generation a re-run replaced (``GET .../results``
serves, and builds, only the served generation's).

Must not: delete a zip a manifest names, one replaced less than ``KEEP_SUPERSEDED_S`` ago, or one that a running build
may still name. Pure: the time is passed in, and no I/O.
"""
from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any, Iterable

from core import stall
from core.settings import MAX_BUSY_RETRY_ATTEMPTS, MAX_LINK_DAYS
from gpu_batch import layout

# The longest a RUNNING build's work folder goes without a blob committed in it (Last-Modified), so that a folder quiet
# for longer is no running build's and a clean may delete it (``adapters.zip_parts.clean_parts``); the longest, too,
# between a build's zip commit and its manifest (one step's attempts). A part commits its blob at its end (staged
# blocks "don't yet form part of the blob" until Put Block List: REST Get Block List; List Blobs shows them only with
# include=uncommittedblobs, not asked here), and the combine reads them all; between two commits, or the last commit
# and the combine's last read, lie at most the calls of one step (the parts' fan-out, ``orchestrations.retries.
# call_all``, or the combine's ``call``): MAX_BUSY_RETRY_ATTEMPTS (core.settings: the most any input's
# busy_retry_attempts allows; STORAGE_RETRY's 3 are fewer), each up to twice host.json ``functionTimeout``
# (core.stall.FUNCTION_TIMEOUT_S: one attempt lost with its host runs again after the queue's visibility timeout, as
# core.stall counts it) and a retry timer of up to BUSY_MAX_DELAY_S (orchestrations.retries, mirrored in core.stall),
# plus core.stall.SLACK_S for queues: ~22 h.
STALE_WORK_S = MAX_BUSY_RETRY_ATTEMPTS * (2 * stall.FUNCTION_TIMEOUT_S + stall.BUSY_MAX_DELAY_S) + stall.SLACK_S
# How long a zip the manifest no longer names is kept: the longest a link to it may have been valid. The last link
# was minted at most a moment after the manifest was replaced (a GET that read it just before), valid at most
# MAX_LINK_DAYS; SLACK_S covers that moment and the clocks of the API's host and the build's (seconds apart).
KEEP_SUPERSEDED_S = MAX_LINK_DAYS * 86_400 + stall.SLACK_S
# How old a zip no manifest names must be to go. Its build names it within STALE_WORK_S of its commit or never; a
# manifest an earlier release's build wrote over a named one without keeping it (only while such builds still run,
# within STALE_WORK_S of the deployment, and so of the zip's commit, which came after) replaced it by then: its links
# are all past KEEP_SUPERSEDED_S later.
ORPHAN_S = STALE_WORK_S + KEEP_SUPERSEDED_S
# When a build's sweep looks at its generation's zips, after the build's end: every zip the sweep may find to delete is
# past its bound by then. The zips the build replaced at its end: KEEP_SUPERSEDED_S. Those of a build terminated before
# it started, whose step ran on beside it (README, the terminate row): such a step commits a zip, or writes a manifest
# that replaces one, at most STALE_WORK_S after the terminate, so after this build's end, and that zip goes ORPHAN_S,
# the one it replaced KEEP_SUPERSEDED_S, later. A zip a later build replaced is its own sweep's (~8 days 20 h).
SWEEP_AFTER_S = STALE_WORK_S + ORPHAN_S


def new_build() -> str:
    """A build's id (``contracts.ZipPlan.build``): random, so that two builds at once never share a name."""
    return secrets.token_hex(4)


def named_zip(manifest: Any, task_id: str) -> str:
    """The zip blob ``manifest`` was written for: its ``zip``, or, where that is no zip of this generation's (or the
    manifest is missing or odd), the one name every build wrote before builds were named (``results_zip_blob``)."""
    name = manifest.get("zip") if isinstance(manifest, dict) else None
    if isinstance(name, str) and layout.results_zip_build(task_id, name) is not None:
        return name
    return layout.results_zip_blob(task_id)


def _previous(manifest: Any, task_id: str) -> dict[str, datetime | None]:
    """The zips ``manifest`` keeps for their links: name -> when it was replaced (None: a time that does not read,
    kept as if replaced now)."""
    listed = manifest.get("previous") if isinstance(manifest, dict) else None
    found: dict[str, datetime | None] = {}
    for entry in listed if isinstance(listed, list) else []:
        name = entry.get("zip") if isinstance(entry, dict) else None
        if not isinstance(name, str) or layout.results_zip_build(task_id, name) is None:
            continue
        try:
            when: datetime | None = datetime.fromisoformat(str(entry.get("superseded")))
            if when is not None and when.tzinfo is None:
                when = None
        except ValueError:
            when = None
        earlier = found.get(name, when)  # listed twice (not written so): the later time, or None
        found[name] = None if earlier is None or when is None else max(earlier, when)
    return found


def _past(when: datetime | None, now: datetime) -> bool:
    return when is not None and when + timedelta(seconds=KEEP_SUPERSEDED_S) < now


def replacing(found: Any, task_id: str, name: str, now: datetime) -> tuple[list[dict[str, str]], list[str]]:
    """For a manifest naming zip ``name`` written over ``found`` (the manifest there, None: none) at ``now`` (aware):
    (its ``previous``: the zips still kept, ``found``'s own among them unless it is ``name``, replaced ``now``; the
    zips past ``KEEP_SUPERSEDED_S``, to delete once it is written)."""
    previous = _previous(found, task_id)
    if found is not None:
        previous[named_zip(found, task_id)] = now
    previous.pop(name, None)
    kept = [{"zip": n, "superseded": (when or now).isoformat()} for n, when in sorted(previous.items())
            if not _past(when, now)]
    return kept, sorted(n for n, when in previous.items() if _past(when, now))


def expired(manifest: Any, task_id: str, now: datetime) -> list[str]:
    """The zips ``manifest`` keeps whose links have all ended by ``now``: to delete (``GET .../results`` does, so a
    replaced zip goes even when no build follows)."""
    return sorted(n for n, when in _previous(manifest, task_id).items()
                  if _past(when, now) and n != named_zip(manifest, task_id))


def without(manifest: Any, task_id: str, names: Iterable[str]) -> dict[str, Any] | None:
    """``manifest`` without the kept zips ``names`` (deleted); None when it keeps none of them (nothing to write)."""
    gone = set(names)
    if not isinstance(manifest, dict) or not gone & set(_previous(manifest, task_id)):
        return None
    listed = manifest.get("previous")
    return {**manifest, "previous": [e for e in (listed if isinstance(listed, list) else [])
                                     if not (isinstance(e, dict) and e.get("zip") in gone)]}


def orphans(listed: Iterable[tuple[str, datetime]], manifest: Any, task_id: str, now: datetime) -> list[str]:
    """Of the blobs ``listed`` in the zips' folder (name, Last-Modified), the zips ``manifest`` neither names nor
    keeps, older than ``ORPHAN_S``: no link can still use them, and no build will name them."""
    keep = {named_zip(manifest, task_id), *_previous(manifest, task_id)} if manifest is not None else set()
    before = now - timedelta(seconds=ORPHAN_S)
    return sorted(n for n, modified in listed
                  if layout.results_zip_build(task_id, n) is not None and n not in keep and modified < before)
