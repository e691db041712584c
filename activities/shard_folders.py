"""One listing of each shard folder serves every reader of a resumed listing's write call, kept current by its writes.

Why: per shard, a resumed listing's ``write_shard_manifests`` call (``activities.enumerate.run_write_shards``) has
several readers of the names under the shard's folder (``layout.shard_prefix``): the drop of the results of images
replaced since (``activities.replaced_images``), the carry of earlier results from the shard's own later attempts and
from its neighbours' attempts (``activities.carried_results``), and the coverage that says which shards need no pool
task (``activities.shard_results.earlier_coverage``). Each listed the folder on its own: 2 List Blobs a shard with
nothing changed, up to 4 with images added or replaced (a shard is its right neighbour's source too), where one does:
~2,000 to ~4,000 requests at 10M images of 1,000 shards (tests/integration/test_shard_folder_listings.py counts them).

Why sound: a reader needs the names as they are when it reads, so the call's own writes and deletions in a folder it
listed are applied to the names held (``wrote``, ``deleted``): an ``only_new`` key's attempt 0 the drop deletes, the
attempt 1 results the carry creates (the coverage must see it: a shard whose attempt 1 the earlier run never wrote,
finished by its attempt 2, is carried into attempt 1 and is then done) and the ETags document; the shard's manifest
is written before its turn lists the folder. A rewrite of a blob that exists (``BlobStore.update_json``) changes no
name. A folder listed after the call wrote there shows the write: Azure Storage guarantees "that when the service
performs an insert or update operation, subsequent read or list operations return the latest update" (Manage
concurrency in Blob Storage, learn.microsoft.com/azure/storage/blobs/concurrency-manage). Nobody else changes the
names of a shard this call cuts while it runs: the other write calls of the listing write only their own shards
(each shard is cut by one call: ``core.shards.shard_batches``; a copy of this call run again, at least once, writes
and deletes the same names), the shard groups, the reuse step and the deletions past the count
(``activities.listing_leftovers``) run only after the listing, and a key's runs are one orchestration instance
(``api.starters``), the earlier run's pool job closed before its listing (``orchestrations.task``). What is left is
a late write of that ended run (a worker's last flush, a replaced run's late call before its next check,
``activities.superseded``), which the separate listings missed too when it came after them; missed by the carry or
the coverage, it only runs images again (they count fewer final entries, never more).

Which folders are held: only the call's own shards (``within``), and each only from its own turn on (``moved_to``):
so a shard's own readers, the drop first, read a listing made in the shard's turn, never one made earlier when it was
a neighbour's source (images deleted meanwhile move names left), and a neighbour of another call (the first and last
shards' neighbours) is listed at each use, as before, since that call writes it meanwhile. A held folder more than
``behind`` shards before the one being written is let go (the carry looks that far at most:
``carried_results.CARRY_REACH``), so a call of many small shards holds a few folders' names, not all of them."""
from __future__ import annotations

from adapters.blobs import BlobStore
from gpu_batch import layout


class ShardFolders:
    """The names under the shard folders of one write call's shards (``within``: their indexes), each folder listed
    once, on first use, and kept current by the call's own writes and deletions (module doc)."""

    def __init__(self, store: BlobStore, container: str, key: str, within: range, behind: int) -> None:
        self.store, self.container, self.key = store, container, key
        self.within, self.behind = within, behind
        self._held: dict[int, set[str]] = {}
        self._turn = within.start  # the shard being written (``moved_to``)

    def names(self, index: int) -> set[str]:
        """The names under shard ``index``'s folder now (a copy: the caller may iterate it while this call writes);
        a shard of another call, or one after the shard being written, is listed every time (module doc)."""
        held = self._held.get(index)
        if held is None:
            held = set(self.store.list_names(self.container, layout.shard_prefix(self.key, layout.shard_id(index))))
            if index in self.within and index <= self._turn:
                self._held[index] = held
        return set(held)

    def wrote(self, index: int, name: str) -> None:
        """The call wrote blob ``name`` in shard ``index``'s folder (a folder not listed yet: its listing finds it)."""
        if index in self._held:
            self._held[index].add(name)

    def deleted(self, index: int, name: str) -> None:
        if index in self._held:
            self._held[index].discard(name)

    def moved_to(self, index: int) -> None:
        """The call writes shard ``index`` now: its folder may be held from here on, and folders more than
        ``behind`` before it are no longer read."""
        self._turn = index
        for held in [i for i in self._held if i < index - self.behind]:
            del self._held[held]
