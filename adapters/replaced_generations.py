"""Delete a replaced generation's blobs (``core.replaced`` says which, and when), a bounded share per call.

Why in shares: a generation of a ten-million-image task holds thousands of shard blobs beside its results; one call
deletes at most ``CALL_BLOBS`` (List Blobs pages of up to 5,000 names, the service's most, then blob batches of 256:
``adapters.compose.delete_names``), so it ends within minutes, far inside ``functionTimeout``, and holds one page of
names at a time; the orchestrator calls again until nothing is left (``orchestrations.replaced_sweep``). Each call
lists from the start: what an earlier call deleted is no longer listed, so a retried or repeated call finds only
what is left (idempotent, no marker in the history). Platform: List Blobs returns at most 5,000 items a page
(``maxresults``) and lists soft-deleted blobs only when asked (``include=deleted``, not asked here), so an account
with blob soft delete on lists none of what a call deleted (REST "List Blobs",
learn.microsoft.com/rest/api/storageservices/list-blobs); such an account keeps the deleted blobs, and bills them,
for its retention days.

The first generation's folders hold the task's own entries too (``core.replaced.TASK_STATE_KEPT``, ``RESULTS_KEPT``):
they are listed one level deep (delimiter ``/``) and only the first generation's entries are deleted, each folder by
its prefix; a listing of the whole ``tasks/<task>/`` would walk every later generation's shards too.
"""
from __future__ import annotations

import logging
from typing import Iterator

from adapters.blobs import BlobStore
from adapters.compose import delete_names
from core import replaced
from gpu_batch import layout

logger = logging.getLogger(__name__)

CALL_BLOBS = 25_000  # blobs one call deletes at most: ~100 batches of 256, a few minutes at worst
PAGE = 5_000  # List Blobs' largest page (maxresults)


def _prefixes(store: BlobStore, container: str, task_id: str, generation: str) -> Iterator[tuple[str, bool]]:
    """``(name, is_folder)`` of what the generation holds: its two folders for a re-run's; for the first, the
    first generation's entries at the top of the task's folders, lazily."""
    roots = replaced.generation_roots(task_id, generation)
    if generation:
        yield from ((root, True) for root in roots)
        return
    for root in roots:
        for page in store.iter_level_pages(container, root, PAGE):
            for prefix in page.prefixes:
                if replaced.is_first_generation_entry(task_id, prefix):
                    yield prefix, True
            for blob in page.blobs:
                if replaced.is_first_generation_entry(task_id, blob.name):
                    yield blob.name, False


def delete_generation_share(store: BlobStore, container: str, task_id: str, generation: str,
                            most: int = CALL_BLOBS) -> tuple[int, bool]:
    """Delete up to about ``most`` blobs of generation ``generation`` (a run id; "" the first) of task ``task_id``:
    ``(deleted, done)``, ``done`` when nothing of it is left. Raises on a storage failure (the activity is tried
    again; what was deleted stays deleted)."""
    deleted = 0
    loose: list[str] = []  # the first generation's blobs at the top of its folders: a few files
    for name, folder in _prefixes(store, container, task_id, generation):
        if not folder:
            loose.append(name)
            continue
        marker: str | None = None
        while True:
            names, marker = store.list_names_page(container, name, marker, PAGE)
            deleted += delete_names(store, container, names)
            if deleted >= most:
                return deleted, False
            if marker is None:
                break
    deleted += delete_names(store, container, loose)
    key = layout.generation_key(task_id, generation)
    logger.info("task %s: %d blobs of replaced generation %s deleted", task_id, deleted, key)
    return deleted, True
