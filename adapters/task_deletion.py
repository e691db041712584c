"""Deleting a task's blobs (``core.task_deletion`` says which): page by page, in blob batches, within a deadline.

Why pages: a task of 10M images has ~1,000 shards and a working state of several blobs per shard attempt, more per
re-run (``gpu_batch.layout``); listing all names first (``adapters.compose.delete_prefix``, fine for a merge's work
blobs) holds them all. Here one listing page (at most 5,000 names, the service's maximum: List Blobs ``maxresults``)
is deleted before the next is asked for, so memory stays one page whatever the task's size.

Why a deadline: an HTTP function must answer within 230 s on Azure ("the maximum amount of time that an HTTP
triggered function can take to respond is 230 seconds", functions-scale.md, "Function app time-out duration"). The
deletion stops between batches once ``deadline_s`` has passed and says it is not done; everything it deleted stays
deleted and a second request goes on from what is left (deleting a name already gone is no failure), so the API
answers 202 "send it again" rather than being cut by the front end. The measured sizes are in the README, "Deleting a
task".
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from adapters.blobs import BlobStore
from adapters.compose import delete_names
from core import task_deletion
from core.settings import Settings

PAGE = 5000  # names per listing page: List Blobs' maximum ``maxresults``
BATCH = 256  # names per request: the most subrequests one Blob Batch takes (Blob Batch REST reference)
# Batch requests in flight at once: one at a time, Azurite on two cores took 159 s for 10,000 blobs (README,
# "Deleting a task"). Each subrequest counts as a transaction of its own ("Batch API for Blob Storage", Azure
# updates, 2019), so eight batches at once are ~2,000 requests in flight, a tenth of a standard account's 20,000
# requests per second ("Scalability and performance targets for standard storage accounts")
BATCHES_AT_ONCE = 8


@dataclass(frozen=True, slots=True)
class Deleted:
    """How many blobs a deletion removed from each container, and whether none is left under the task's prefixes."""

    state: int
    web: int
    done: bool


def delete_under(store: BlobStore, container: str, prefix: str, stop_at: float,
                 clock: Callable[[], float] = time.monotonic, page: int = PAGE) -> tuple[int, bool]:
    """Delete every blob under ``prefix``, one listing page at a time (``delete_names``: batches of 256, one by one
    where the service refuses batches; ``BATCHES_AT_ONCE`` batches at once); (how many, whether all went) once the prefix is empty or ``stop_at`` (on
    ``clock``) has passed. Each page is listed from the start: the names before it are deleted, so nothing is
    skipped and no continuation marker outlives its page. A container that does not exist holds nothing."""
    if not store.container_exists(container):
        return 0, True
    deleted = 0
    while True:
        names, _ = store.list_names_page(container, prefix, None, page)
        if not names:
            return deleted, True
        if clock() >= stop_at:
            return deleted, False
        with ThreadPoolExecutor(BATCHES_AT_ONCE) as pool:
            deleted += sum(pool.map(lambda chunk: delete_names(store, container, chunk),
                                    [names[i:i + BATCH] for i in range(0, len(names), BATCH)]))


def delete_task_blobs(store: BlobStore, settings: Settings, task_id: str, deadline_s: float,
                      clock: Callable[[], float] = time.monotonic,
                      wall: Callable[[], float] = time.time) -> Deleted:
    """Delete the task's blobs: its working state, its preview folders on the static website, then its results
    (the last, so a deletion cut short still has the record of the preview folder for anyone looking). Stops once
    ``deadline_s`` seconds have passed (``Deleted.done`` False). Before any, the deletion mark
    (``core.task_deletion.tombstone_blob``, dated by ``wall``), which stays; once none is left, the mark again with
    that time."""
    stop_at = clock() + deadline_s
    mark = task_deletion.tombstone_blob(task_id)
    began = wall()
    if store.container_exists(settings.container):  # first: a render running now finds it after its last write
        store.write_json(settings.container, mark, task_deletion.tombstone(task_id, began))
    working, results = task_deletion.state_prefixes(task_id)
    state, done = delete_under(store, settings.container, working, stop_at, clock)
    web = 0
    if done:
        web, done = delete_under(store, settings.web_container, task_deletion.web_prefix(task_id), stop_at, clock)
    if done:
        more, done = delete_under(store, settings.container, results, stop_at, clock)
        state += more
    if done and store.container_exists(settings.container):  # renders that begin from now on are the fresh task's
        store.write_json(settings.container, mark, task_deletion.tombstone(task_id, began, wall()))
    return Deleted(state=state, web=web, done=done)


def has_blobs(store: BlobStore, settings: Settings, task_id: str) -> bool:
    """Whether anything of the task is left in the state container or on the static website (one name asked for per
    prefix): a preview folder published late (a terminated run's queued activity, Durable fidelity row 49 in
    devhost/README.md) is the one leftover anyone can read, so an operator's DELETE finds it too."""
    places = [(settings.container, prefix) for prefix in task_deletion.state_prefixes(task_id)]
    places.append((settings.web_container, task_deletion.web_prefix(task_id)))
    return any(store.container_exists(container) and store.list_names_page(container, prefix, None, 1)[0]
               for container, prefix in places)


def deleted_since(store: BlobStore, container: str, task_or_key: str, started_s: float) -> bool:
    """Whether the task of ``task_or_key`` (a task id or a generation key) was deleted since a call that began at
    ``started_s`` (seconds since the epoch): ``core.task_deletion.deleted_since``, from its mark in ``container``
    (the state container; one small read)."""
    return task_deletion.deleted_since(
        store.read_json_or_none(container, task_deletion.tombstone_blob(task_or_key)), started_s)


def run_of_deleted_task(store: BlobStore, settings: Settings, job: str) -> bool:
    """Whether pool job ``job``'s run belongs to a task deleted since it started (``core.task_deletion.deleted_run``,
    from the task's deletion mark: one small read)."""
    from gpu_batch import layout

    mark = store.read_json_or_none(settings.container, task_deletion.tombstone_blob(layout.task_of_pool_job(job)))
    return task_deletion.deleted_run(mark, job)
