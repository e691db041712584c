"""Two builds of one task's results zip at once, in Azurite: after ``POST .../terminate {"target": "zip"}`` the
terminated build's activity runs on (an activity cannot be stopped) beside the build the next ``GET .../results``
starts under the same instance id, and both write the same zip blob, then the same manifest.

``GET .../results`` (``api.after_task._zip_state``) answers ``ready`` only for the zip its manifest was written for
(the manifest's ``zip_etag``), a build's commit names its own blocks alone (``block_writer.new_build``) and a
build in parts composes its own parts' work blobs (``ZipPlan.build``), so the zip handed out is one build's, of the
files its manifest lists. The writes are called in the order that showed each
defect (no threads, nothing timed): a file is added between the builds (a CSV at another threshold), so the old
build's zip lacks it.
"""
from __future__ import annotations

import base64
import io
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from activities.results_zip import run_build
from adapters import blob_requests, zip_parts
from adapters.block_writer import BlockBlobWriter, block_id, new_build
from adapters.blobs import BlobStore
from adapters.results_bundle import linked_blobs, write_manifest, write_zip, write_zip_blob, zip_path
from api.after_task import _zip_state
from core import contracts as c
from core.settings import Settings
from core.zipformat import part_inputs
from gpu_batch import layout
from tests.integration.test_results_zip_parts import files  # noqa: F401 - the fixture: a finished task's files


class _StillRunning(Exception):
    """The old build, held before its commit: a terminated build's activity that has not got that far yet."""


def _settings(container: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": container,
                              "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "1"})


def _add_file(store: BlobStore, container: str, task: str) -> str:
    """A linked file written after the old build listed the files (``POST .../previews`` writes such a CSV)."""
    added = layout.threshold_csv_blob(task, 0.5, "")
    store.write_bytes(container, added, b"file,conf\ncam1/IMG_00001.JPG,0.61\n")
    assert added in linked_blobs(store, container, task)
    return added


def _members(store: BlobStore, container: str, task: str) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(store.read_bytes(container, layout.results_zip_blob(task)))) as zf:
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist()}


def _current(store: BlobStore, container: str, task: str) -> dict[str, bytes]:
    return {zip_path(task, n): store.read_bytes(container, n) for n in linked_blobs(store, container, task)}


def _hold_old_build_at_the_new_commit(monkeypatch: pytest.MonkeyPatch, zip_name: str,
                                      old_build: Callable[[], Any]) -> list[str]:
    """When the new build commits the zip (its blocks staged), first run ``old_build`` up to its own commit, which
    is held (``_StillRunning``): the old build's blocks are staged last, uncommitted. Answers the commits seen."""
    real = BlobClient.commit_block_list
    seen: list[str] = []

    def commit(self: BlobClient, blocks: Any, **kwargs: Any) -> Any:
        if self.blob_name != zip_name:
            return real(self, blocks, **kwargs)
        seen.append("new" if not seen else "old")
        if seen[-1] == "old":
            raise _StillRunning
        with pytest.raises(_StillRunning):
            old_build()
        return real(self, blocks, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", commit)
    return seen


def test_a_terminated_builds_zip_committed_after_the_next_builds_is_not_handed_out(store: BlobStore,
                                                                                   files: Any) -> None:
    """The new build commits its zip, the old build commits its (of the files it listed before one was added) and
    writes its manifest, the new build writes its manifest: the manifest names the current files over the old zip.
    Before, GET answered ``ready`` and linked that zip, which lacks the added file, until another file changed."""
    container, task, _ = files
    s = _settings(container)
    old_files = linked_blobs(store, container, task)  # the terminated build listed the files ...
    added = _add_file(store, container, task)  # ... before this one was written
    new_files = linked_blobs(store, container, task)

    new_bytes, new_etag = write_zip_blob(store, container, task, new_files)  # the new build commits its zip
    write_zip(store, container, task, old_files)  # the old build commits its zip, then writes its manifest
    write_manifest(store, container, task, new_files, new_bytes, new_etag)  # the new build writes its manifest

    assert zip_path(task, added) not in _members(store, container, task)  # the zip there is the old build's
    state, build, _ = _zip_state(store, s, task)
    assert (state["state"], build) == ("building", True)

    write_zip(store, container, task)  # the build that GET starts
    state, build, _ = _zip_state(store, s, task)
    assert (state["state"], build) == ("ready", False)
    assert _members(store, container, task) == _current(store, container, task)


def test_a_manifest_of_an_earlier_release_keeps_its_rule(store: BlobStore, files: Any) -> None:
    """A manifest without ``zip_etag`` (written before it was recorded): ``ready`` while its files are the current
    ones and the zip blob exists, as then; no zip blob, no ``ready``."""
    container, task, _ = files
    s = _settings(container)
    manifest = write_zip(store, container, task)
    assert manifest["zip_etag"] == store.etag_or_none(container, layout.results_zip_blob(task))
    store.write_json(container, layout.results_zip_manifest_blob(task),
                     {k: v for k, v in manifest.items() if k != "zip_etag"})
    assert _zip_state(store, s, task)[0]["state"] == "ready"
    store.write_bytes(container, layout.results_zip_blob(task), b"another zip")  # its etag is not checked
    assert _zip_state(store, s, task)[0]["state"] == "ready"
    store.delete_if_exists(container, layout.results_zip_blob(task))
    assert _zip_state(store, s, task)[0]["state"] == "building"


def test_a_commit_that_answered_no_etag_records_none(store: BlobStore, files: Any) -> None:
    """An empty ETag (a service that answered none) is not recorded: no zip would match it, and every GET would
    start a build again for ever; the manifest is judged as an earlier release's instead."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    size, _ = write_zip_blob(store, container, task, listed)
    assert "zip_etag" not in write_manifest(store, container, task, listed, size, "")
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"


def test_a_one_pass_build_commits_its_own_blocks_alone(store: BlobStore, files: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The new build stages its zip's block, the old build stages its (of its earlier listing) and is held before
    its commit, the new build commits. Before, both staged block id 0, the old block replaced the new one, and the
    new build's commit and manifest handed out the old build's zip as ``ready``."""
    container, task, _ = files
    monkeypatch.setattr(blob_requests, "PUT_LIMIT", 1024)  # so the zip is staged in blocks and committed
    old_files = linked_blobs(store, container, task)
    added = _add_file(store, container, task)
    seen = _hold_old_build_at_the_new_commit(monkeypatch, layout.results_zip_blob(task),
                                             lambda: write_zip(store, container, task, old_files))
    write_zip(store, container, task)
    assert seen == ["new", "old"]
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"
    members = _members(store, container, task)
    assert zip_path(task, added) in members and members == _current(store, container, task)


def test_a_composed_build_commits_its_own_blocks_alone(store: BlobStore, files: Any,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a zip composed from parts (``zip_parts.combine``): the old build's combine stages its blocks
    between the new combine's staging and its commit. Before, the commit joined blocks of both into a corrupt zip."""
    container, task, _ = files
    part_bytes = 2_000
    old_plan = zip_parts.plan(store, container, task, part_bytes)
    _add_file(store, container, task)
    planned = run_build(store, container, task, part_bytes)["plan"]
    assert planned is not None
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned)]

    def old_build() -> None:
        old_parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, old_plan)]
        zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=old_plan, parts=old_parts))

    seen = _hold_old_build_at_the_new_commit(monkeypatch, layout.results_zip_blob(task), old_build)
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned, parts=parts))
    assert seen == ["new", "old"]
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"
    assert _members(store, container, task) == _current(store, container, task)


def test_block_ids_keep_their_length_and_the_shared_ones_are_as_before(store: BlobStore, unique_name: str) -> None:
    """Every id has the 12 characters of earlier releases' (``f"{index:08d}"``, still the shared ids), so a writer
    of its own ids is not refused beside the uncommitted blocks an earlier writer left (400 InvalidBlobOrBlock), and
    two writers of their own ids commit their own blocks only. The later commit is then refused (REST Put Block List:
    the first commit dropped the uncommitted blocks it did not name), which fails that build's activity, called again
    by its orchestration (``orchestrations.retries.call``), rather than mix or lose the first build's zip."""
    assert [block_id(i) for i in (0, 7, 49_999)] == [base64.b64encode(f"{i:08d}".encode()).decode()
                                                     for i in (0, 7, 49_999)]
    builds = [new_build(), new_build()]
    assert builds[0] != builds[1] and {len(block_id(i, b)) for i in (0, 49_999) for b in builds} == {12}
    store.ensure_container(unique_name)
    with pytest.raises(RuntimeError):
        with BlockBlobWriter(store, unique_name, "z.bin", block_bytes=4) as failed:  # shared ids, left uncommitted
            failed.write(b"left behind")
            raise RuntimeError("a failed writer")
    first = BlockBlobWriter(store, unique_name, "z.bin", block_bytes=4, build=builds[0])
    second = BlockBlobWriter(store, unique_name, "z.bin", block_bytes=4, build=builds[1])
    first.write(b"1111" * 3)
    second.write(b"2222" * 2)
    first.close()
    assert store.read_bytes(unique_name, "z.bin") == b"1111" * 3
    assert first.etag.strip('"') == store.etag_or_none(unique_name, "z.bin")
    with pytest.raises(HttpResponseError) as refused:  # its blocks were dropped by the first one's commit
        second.close()
    assert (refused.value.status_code, refused.value.error_code) == (400, "InvalidBlockList")
    assert store.read_bytes(unique_name, "z.bin") == b"1111" * 3


def test_a_terminated_builds_part_written_late_is_not_composed_into_the_next_builds_zip(store: BlobStore,
                                                                                         files: Any) -> None:
    """The old build's part activity (of its earlier plan) commits its work blob after the new build's part of the
    same number, before the new build's combine reads it. Before, both wrote ``part-00000.deflate`` under the task's
    work folder: the combine composed the old build's deflated bytes with the new plan's CRCs and lengths, a corrupt
    zip answered ``ready``. Now each plan names work blobs of its own (``ZipPlan.build``)."""
    container, task, _ = files
    part_bytes = 2_000
    old_plan = zip_parts.plan(store, container, task, part_bytes)
    _add_file(store, container, task)
    planned = run_build(store, container, task, part_bytes)["plan"]
    assert planned is not None and planned.get("build") != old_plan.get("build")
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned)]
    for asked in part_inputs(task, old_plan):  # the old build's parts, ending late
        zip_parts.deflate_part(store, container, asked)
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned, parts=parts))
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"
    assert _members(store, container, task) == _current(store, container, task)
    work = layout.results_zip_work_prefix(task)
    zip_parts.clean_parts(store, container, task, planned["build"])  # its own work; the old build's may still run
    assert {n[len(work):].split("/")[0] for n in store.list_names(container, work)} == {old_plan["build"]}
    zip_parts.clean_parts(store, container, task, planned["build"], now=_past_the_bound())
    assert list(store.list_names(container, work)) == []


def _past_the_bound() -> datetime:
    """A clean's clock once every work blob written so far is older than ``zip_parts.STALE_WORK_S``."""
    return datetime.now(timezone.utc) + timedelta(seconds=zip_parts.STALE_WORK_S + 120)


def _folders(store: BlobStore, container: str, task: str) -> set[str]:
    """The builds whose work blobs are there ("" for un-foldered ones, of a plan recorded before builds)."""
    work = layout.results_zip_work_prefix(task)
    return {n[len(work):].split("/")[0] if "/" in n[len(work):] else "" for n in store.list_names(container, work)}


def test_a_terminated_builds_clean_leaves_the_next_builds_parts(store: BlobStore, files: Any) -> None:
    """The old build's clean (its activity runs on after the terminate) runs between the new build's parts and its
    combine. Before, it deleted the whole work folder, the new build's parts with it: the combine failed (and after
    its retries GET answered ``failed`` until ``?zip=rebuild``). Now it deletes its own build's work alone."""
    container, task, _ = files
    part_bytes = 2_000
    old_plan = zip_parts.plan(store, container, task, part_bytes)
    old_parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, old_plan)]
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=old_plan, parts=old_parts))
    _add_file(store, container, task)
    planned = run_build(store, container, task, part_bytes)["plan"]
    assert planned is not None
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned)]
    assert _folders(store, container, task) == {old_plan["build"], planned["build"]}

    assert zip_parts.clean_parts(store, container, task, old_plan["build"]) == len(old_parts)  # the old clean
    assert _folders(store, container, task) == {planned["build"]}
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned, parts=parts))
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"
    assert _members(store, container, task) == _current(store, container, task)
    assert zip_parts.clean_parts(store, container, task, planned["build"]) == len(parts)
    assert _folders(store, container, task) == set()


def test_a_terminated_builds_work_goes_at_a_clean_past_the_bound(store: BlobStore, files: Any) -> None:
    """A terminated build's parts (no clean of its own follows) are left by the next build's clean while they may
    still be written, and deleted by a clean once older than ``STALE_WORK_S``; un-foldered work blobs (a plan
    recorded before builds had folders) go at any clean."""
    container, task, _ = files
    part_bytes = 2_000
    terminated = zip_parts.plan(store, container, task, part_bytes)
    for asked in part_inputs(task, terminated):
        zip_parts.deflate_part(store, container, asked)
    legacy = {k: v for k, v in zip_parts.plan(store, container, task, part_bytes).items() if k != "build"}
    for asked in part_inputs(task, legacy):  # type: ignore[arg-type]
        zip_parts.deflate_part(store, container, asked)
    planned = run_build(store, container, task, part_bytes)["plan"]
    assert planned is not None
    for asked in part_inputs(task, planned):
        zip_parts.deflate_part(store, container, asked)
    assert _folders(store, container, task) == {terminated["build"], "", planned["build"]}

    zip_parts.clean_parts(store, container, task, planned["build"])
    assert _folders(store, container, task) == {terminated["build"]}  # it may still be written: left
    zip_parts.clean_parts(store, container, task, "another", now=_past_the_bound())  # a later build's clean
    assert _folders(store, container, task) == set()


def test_a_clean_recorded_before_builds_named_leaves_a_running_builds_parts(store: BlobStore, files: Any) -> None:
    """A clean whose input names no build (scheduled by an earlier release, run after the deployment) deletes the
    un-foldered work blobs, its own plan's where that plan had no build, and stale folders only: the new build's
    parts beside it stay, and its combine makes the zip."""
    container, task, _ = files
    part_bytes = 2_000
    legacy = {k: v for k, v in zip_parts.plan(store, container, task, part_bytes).items() if k != "build"}
    for asked in part_inputs(task, legacy):  # type: ignore[arg-type]
        zip_parts.deflate_part(store, container, asked)
    _add_file(store, container, task)
    planned = run_build(store, container, task, part_bytes)["plan"]
    assert planned is not None
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned)]
    assert _folders(store, container, task) == {"", planned["build"]}

    zip_parts.clean_parts(store, container, task)  # the old clean, as its input was recorded
    assert _folders(store, container, task) == {planned["build"]}
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned, parts=parts))
    assert _members(store, container, task) == _current(store, container, task)
    zip_parts.clean_parts(store, container, task, now=_past_the_bound())
    assert _folders(store, container, task) == set()
