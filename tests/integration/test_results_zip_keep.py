"""When the results zips of earlier builds go, in Azurite (``core.zip_builds``): a replaced zip stays, and its link
serves it, until every link handed out for it has ended (``KEEP_SUPERSEDED_S`` after a manifest replaced it), then a
``GET .../results``, a later build's end or the build's own sweep deletes it; a zip no manifest ever named goes at a
build's end or sweep once no build can still name it (``ORPHAN_S``). The clock is handed in, read off the manifest and
the blobs' Last-Modified: nothing here waits or depends on how fast it runs.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import requests

from adapters import share_links
from adapters.blobs import BlobStore
from adapters.results_bundle import linked_blobs, sweep_zips, write_manifest, write_zip, write_zip_blob
from api.after_task import _zip_state
from core import zip_builds
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_results_zip_parts import files  # noqa: F401 - the fixture: a finished task's files

SECOND = timedelta(seconds=1)


def _settings(container: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": container,
                              "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "1"})


def _ready(store: BlobStore, container: str, task: str, now: datetime | None = None) -> str:
    """The zip a ``GET .../results`` at ``now`` answers ``ready`` with."""
    state, build, _ = _zip_state(store, _settings(container), task, now)
    assert (state["state"], build) == ("ready", False), state
    blob: str = state["blob"]
    return blob


def _manifest(store: BlobStore, container: str, task: str) -> dict[str, Any]:
    found: dict[str, Any] = store.read_json(container, layout.results_zip_manifest_blob(task))
    return found


def _replaced_at(store: BlobStore, container: str, task: str, name: str) -> datetime:
    return next(datetime.fromisoformat(e["superseded"]) for e in _manifest(store, container, task)["previous"]
                if e["zip"] == name)


def _modified(store: BlobStore, container: str, name: str) -> datetime:
    modified: datetime = store.service.get_blob_client(container, name).get_blob_properties().last_modified
    return modified


def test_a_replaced_zip_serves_its_links_until_they_have_ended_and_then_a_get_deletes_it(store: BlobStore,
                                                                                        files: Any) -> None:
    """Build one, its link handed out; build two (a file changed): one's link still serves one's zip, at a GET up to
    the bound's end too; a GET a second past it deletes one's zip (its link: 404) and takes it out of the manifest.
    Why a GET: with no build after it, a replaced zip stayed, its storage paid, for ever."""
    container, task, _ = files
    first = write_zip(store, container, task)["zip"]
    assert _ready(store, container, task) == first
    link = share_links.read_links(store, container, [first], 7).urls[first]
    served = requests.get(link, timeout=60).content
    store.write_bytes(container, layout.csv_blob(task), b"file,conf\n")  # e.g. a repeat search run again
    second = write_zip(store, container, task)["zip"]
    replaced = _replaced_at(store, container, task, first)
    bound = replaced + timedelta(seconds=zip_builds.KEEP_SUPERSEDED_S)

    assert _ready(store, container, task, bound) == second
    assert store.exists(container, first) and requests.get(link, timeout=60).content == served
    assert _ready(store, container, task, bound + SECOND) == second
    assert not store.exists(container, first) and requests.get(link, timeout=60).status_code == 404
    assert _manifest(store, container, task)["previous"] == []
    assert store.exists(container, second) and _ready(store, container, task, bound + SECOND) == second


def test_a_later_builds_end_deletes_the_zips_past_their_links_and_keeps_the_others(store: BlobStore,
                                                                                   files: Any) -> None:
    """Three builds: the third's end, a second past the first's bound, deletes the first's zip and keeps the second's
    (replaced by the third only now), whose link still serves it."""
    container, task, _ = files
    first = write_zip(store, container, task)["zip"]
    second = write_zip(store, container, task)["zip"]
    link = share_links.read_links(store, container, [second], 7).urls[second]
    late = _replaced_at(store, container, task, first) + timedelta(seconds=zip_builds.KEEP_SUPERSEDED_S) + SECOND
    build = zip_builds.new_build()
    listed = linked_blobs(store, container, task)
    size, etag = write_zip_blob(store, container, task, listed, build)
    written = write_manifest(store, container, task, listed, size, etag, build, now=late)
    assert written["previous"] == [{"zip": second, "superseded": late.isoformat()}]
    assert not store.exists(container, first) and store.exists(container, second)
    assert requests.get(link, timeout=60).status_code == 200
    assert _ready(store, container, task) == layout.results_zip_blob(task, build)


def test_a_zip_no_manifest_named_goes_at_a_builds_end_once_no_build_can_name_it(store: BlobStore,
                                                                                 files: Any) -> None:
    """A build whose zip was committed but whose manifest never came (its activity lost after the commit, or a
    one-pass build retried under a new build): kept by a build's end up to ``ORPHAN_S`` after its commit (its build
    may still name it), deleted a second past it; the named zip and the kept ones stay. A GET leaves it (no
    listing there)."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    orphan = layout.results_zip_blob(task, zip_builds.new_build())
    write_zip_blob(store, container, task, listed, layout.results_zip_build(task, orphan) or "")
    first = write_zip(store, container, task)["zip"]
    bound = _modified(store, container, orphan) + timedelta(seconds=zip_builds.ORPHAN_S)

    def build_ending_at(now: datetime) -> str:
        build = zip_builds.new_build()
        size, etag = write_zip_blob(store, container, task, listed, build)
        return str(write_manifest(store, container, task, listed, size, etag, build, now=now)["zip"])

    assert _ready(store, container, task, bound + SECOND) == first and store.exists(container, orphan)
    second = build_ending_at(bound)
    assert store.exists(container, orphan) and store.exists(container, first)
    third = build_ending_at(bound + SECOND)
    assert not store.exists(container, orphan)
    kept = {e["zip"] for e in _manifest(store, container, task)["previous"]}
    assert third not in kept and second in kept and all(store.exists(container, n) for n in (second, third))


def test_a_builds_sweep_deletes_what_no_later_get_or_build_came_for(store: BlobStore, files: Any) -> None:
    """Two builds, a zip no manifest names beside them, and no GET or build after: the first zip (replaced) and the
    unnamed one stayed for ever. The sweep the second build starts (``sweep_zips``, ``SWEEP_AFTER_S`` after its end)
    deletes both, takes the first out of the manifest, and leaves the named zip, still ready; before the bounds it
    deletes nothing. Fails without the change (no sweep)."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    orphan = layout.results_zip_blob(task, zip_builds.new_build())
    write_zip_blob(store, container, task, listed, layout.results_zip_build(task, orphan) or "")
    first = write_zip(store, container, task)["zip"]
    second = write_zip(store, container, task)["zip"]
    ended = _replaced_at(store, container, task, first)
    link = share_links.read_links(store, container, [first], 7).urls[first]

    assert sweep_zips(store, container, task, ended + timedelta(seconds=zip_builds.KEEP_SUPERSEDED_S)) == 0
    assert store.exists(container, first) and requests.get(link, timeout=60).status_code == 200
    swept = ended + timedelta(seconds=zip_builds.SWEEP_AFTER_S)
    assert sweep_zips(store, container, task, swept) == 2
    assert not store.exists(container, first) and not store.exists(container, orphan)
    assert _manifest(store, container, task)["previous"] == [] and store.exists(container, second)
    assert _ready(store, container, task, swept) == second
    assert sweep_zips(store, container, task, swept) == 0  # a sweep run again: nothing left, nothing fails


def test_a_sweep_of_a_generation_with_no_manifest_deletes_the_zips_no_build_can_name(store: BlobStore,
                                                                                      files: Any) -> None:
    """No manifest (every build of the generation ended after its commit and before its manifest): no zip of it was
    ever linked, so the sweep deletes them once past ``ORPHAN_S`` (their build may name them until then)."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    zips = [layout.results_zip_blob(task, zip_builds.new_build()) for _ in range(2)]
    for name in zips:
        write_zip_blob(store, container, task, listed, layout.results_zip_build(task, name) or "")
    assert not store.exists(container, layout.results_zip_manifest_blob(task))
    bounds = [_modified(store, container, n) + timedelta(seconds=zip_builds.ORPHAN_S) for n in zips]
    assert sweep_zips(store, container, task, min(bounds)) == 0 and all(store.exists(container, n) for n in zips)
    assert sweep_zips(store, container, task, max(bounds) + SECOND) == 2
    assert not any(store.exists(container, n) for n in zips)
