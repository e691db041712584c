"""Two builds of one task's results zip at once, in Azurite: after ``POST .../terminate {"target": "zip"}`` the
terminated build's activity runs on (an activity cannot be stopped) beside the build the next ``GET .../results``
starts under the same instance id, and both write a zip, then the same manifest.

Each build writes its zip under a name of its own (``layout.results_zip_blob``, ``ZipPlan.build``) and its manifest
names it; ``GET .../results`` (``api.after_task._zip_state``) answers ``ready`` only for the zip its manifest names and
was written for (the manifest's ``zip_etag``), so the zip handed out is one build's, of the files its manifest lists,
and a link handed out keeps serving that zip whatever another build commits later; the zips of earlier builds stay
until their links have ended (``core.zip_builds``). The writes are called in the order that showed each defect (no
threads, nothing timed): a file is added between the builds (a CSV at another threshold), so the old build's zip
lacks it.
"""
from __future__ import annotations

import base64
import io
import zipfile
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
import requests
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from activities.results_zip import run_build
from adapters import blob_requests, share_links, zip_parts
from adapters.block_writer import BlockBlobWriter, block_id, new_build
from adapters.blobs import BlobStore
from adapters.results_bundle import linked_blobs, write_manifest, write_zip, write_zip_blob, zip_path
from api.after_task import _zip_state
from core import contracts as c
from core import zip_builds
from core.settings import Settings
from core.zipformat import part_inputs
from gpu_batch import layout
from tests.integration.test_results_zip_parts import files, zip_blob  # noqa: F401 - the fixture: a task's files


def _settings(container: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": "UseDevelopmentStorage=true", "TRAPBATCH_CONTAINER": container,
                              "TRAPBATCH_RESULTS_ZIP_ABOVE_BYTES": "1"})


def _add_file(store: BlobStore, container: str, task: str) -> str:
    """A linked file written after the old build listed the files (``POST .../previews`` writes such a CSV)."""
    added = layout.threshold_csv_blob(task, 0.5, "")
    store.write_bytes(container, added, b"file,conf\ncam1/IMG_00001.JPG,0.61\n")
    assert added in linked_blobs(store, container, task)
    return added


def _unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        return {n: zf.read(n) for n in zf.namelist()}


def _members(store: BlobStore, container: str, task: str, name: str | None = None) -> dict[str, bytes]:
    """The members of zip ``name`` (default: the one the manifest names)."""
    return _unzip(store.read_bytes(container, name or zip_blob(store, container, task)))


def _current(store: BlobStore, container: str, task: str) -> dict[str, bytes]:
    return {zip_path(task, n): store.read_bytes(container, n) for n in linked_blobs(store, container, task)}


def _ready_link(store: BlobStore, container: str, task: str, now: datetime | None = None) -> tuple[str, str]:
    """What a ``GET .../results`` answering ``ready`` hands out: the zip's blob and its read-only link."""
    state, build, _ = _zip_state(store, _settings(container), task, now)
    assert (state["state"], build) == ("ready", False), state
    return state["blob"], share_links.read_links(store, container, [state["blob"]], 7).urls[state["blob"]]


def _download(link: str) -> requests.Response:
    got = requests.get(link, timeout=60)
    assert got.status_code == 200, got.text
    return got


def _run_old_build_at_the_new_commit(monkeypatch: pytest.MonkeyPatch, zip_name: str,
                                     old_build: Callable[[], Any]) -> list[str]:
    """When the new build commits its zip ``zip_name`` (its blocks staged), first run ``old_build`` to its end: the
    old build commits its zip and writes its manifest between the new build's staging and its commit. Answers the
    zip names committed, in order."""
    real = BlobClient.commit_block_list
    seen: list[str] = []

    def commit(self: BlobClient, blocks: Any, **kwargs: Any) -> Any:
        if self.blob_name.endswith(".zip"):
            seen.append(self.blob_name)
        if self.blob_name == zip_name and seen.count(zip_name) == 1:
            old_build()
        return real(self, blocks, **kwargs)

    monkeypatch.setattr(BlobClient, "commit_block_list", commit)
    return seen


def test_a_terminated_builds_late_commit_does_not_change_what_the_next_builds_link_serves(store: BlobStore,
                                                                                         files: Any) -> None:
    """The new build writes its zip and manifest, and GET hands out its link; then the old build (of the files it
    listed before one was added) commits its zip and writes its manifest. Before, both builds wrote one zip name:
    the link, already handed out, served the old build's zip from then on, which lacks the added file."""
    container, task, _ = files
    old_files = linked_blobs(store, container, task)  # the terminated build listed the files ...
    added = _add_file(store, container, task)  # ... before this one was written
    write_zip(store, container, task)  # the new build: zip, then manifest
    new_zip, link = _ready_link(store, container, task)
    served = _download(link).content
    assert _unzip(served) == _current(store, container, task) and zip_path(task, added) in _unzip(served)

    write_zip(store, container, task, old_files)  # the old build ends late: its zip, then its manifest
    assert _download(link).content == served  # the link serves what it served
    old_zip = zip_blob(store, container, task)
    assert old_zip != new_zip and zip_path(task, added) not in _members(store, container, task, old_zip)
    state, build, _ = _zip_state(store, _settings(container), task)  # the manifest names the old zip: not current
    assert (state["state"], build) == ("building", True)

    write_zip(store, container, task)  # the build that GET starts
    newest, newest_link = _ready_link(store, container, task)
    assert newest not in (new_zip, old_zip) and _members(store, container, task) == _current(store, container, task)
    assert _download(link).content == served and _unzip(_download(newest_link).content) == _unzip(served)
    manifest = store.read_json(container, layout.results_zip_manifest_blob(task))
    assert {e["zip"] for e in manifest["previous"]} == {new_zip, old_zip}  # kept while their links may be used


def test_the_new_builds_manifest_written_last_hands_out_its_zip_at_once(store: BlobStore, files: Any) -> None:
    """The new build commits its zip, the old build commits its own and writes its manifest, the new build writes
    its manifest: ``ready`` with the new build's zip of the current files (before, the zip there was the old one
    under the one name, and GET built again)."""
    container, task, _ = files
    old_files = linked_blobs(store, container, task)
    _add_file(store, container, task)
    new_files = linked_blobs(store, container, task)
    build = zip_builds.new_build()
    new_bytes, new_etag = write_zip_blob(store, container, task, new_files, build)  # the new build commits its zip
    write_zip(store, container, task, old_files)  # the old build commits its zip, then writes its manifest
    write_manifest(store, container, task, new_files, new_bytes, new_etag, build)  # the new build its manifest
    blob, link = _ready_link(store, container, task)
    assert blob == layout.results_zip_blob(task, build)
    assert _unzip(_download(link).content) == _current(store, container, task)


def test_a_manifest_of_an_earlier_release_still_serves_its_zip(store: BlobStore, files: Any) -> None:
    """A manifest an earlier release wrote (no ``zip_etag``, no ``previous``; ``zip`` the one name every build
    wrote, or missing): ``ready`` with that zip while its files are the current ones and the zip exists, as then,
    and its link serves it; a new build's manifest keeps it for its links; no zip blob, no ``ready``."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    legacy = layout.results_zip_blob(task)
    size, _ = write_zip_blob(store, container, task, listed, "")  # the one name of then
    manifest = {"task_id": task, "zip": legacy, "bytes": size,
                "files": {n: {"size": f["size"], "etag": f["etag"]} for n, f in listed.items()}}
    for written in (manifest, {k: v for k, v in manifest.items() if k != "zip"}):
        store.write_json(container, layout.results_zip_manifest_blob(task), written)
        blob, link = _ready_link(store, container, task)
        assert blob == legacy and _unzip(_download(link).content) == _current(store, container, task)
    store.write_bytes(container, legacy, b"another zip")  # its etag is not checked, as then
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"
    store.delete_if_exists(container, legacy)
    assert _zip_state(store, _settings(container), task)[0]["state"] == "building"

    size, _ = write_zip_blob(store, container, task, listed, "")
    store.write_json(container, layout.results_zip_manifest_blob(task), manifest)
    _, link = _ready_link(store, container, task)
    served = _download(link).content
    written = write_zip(store, container, task)  # the first build of this release
    assert written["zip"] != legacy and [e["zip"] for e in written["previous"]] == [legacy]
    assert _download(link).content == served and _ready_link(store, container, task)[0] == written["zip"]


def test_a_commit_that_answered_no_etag_records_none(store: BlobStore, files: Any) -> None:
    """An empty ETag (a service that answered none) is not recorded: no zip would match it, and every GET would
    start a build again for ever; the manifest is judged as an earlier release's instead."""
    container, task, _ = files
    listed = linked_blobs(store, container, task)
    build = zip_builds.new_build()
    size, _ = write_zip_blob(store, container, task, listed, build)
    assert "zip_etag" not in write_manifest(store, container, task, listed, size, "", build)
    assert _zip_state(store, _settings(container), task)[0]["state"] == "ready"


def test_an_old_one_pass_build_ending_inside_the_new_ones_commit_leaves_its_zip_whole(
        store: BlobStore, files: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The new build stages its zip's blocks, the old build writes its zip and manifest, the new build commits.
    Before, both wrote one name: the old build's blocks and commit mixed into, or replaced, the new build's zip, and
    the new build's manifest handed out the old build's zip as ``ready``."""
    container, task, _ = files
    monkeypatch.setattr(blob_requests, "PUT_LIMIT", 1024)  # so the zip is staged in blocks and committed
    old_files = linked_blobs(store, container, task)
    added = _add_file(store, container, task)
    build = zip_builds.new_build()
    seen = _run_old_build_at_the_new_commit(monkeypatch, layout.results_zip_blob(task, build),
                                            lambda: write_zip(store, container, task, old_files))
    write_zip(store, container, task, build=build)
    assert seen[0] == layout.results_zip_blob(task, build) and len(seen) == 2 and seen[1] != seen[0]  # the old's
    blob, link = _ready_link(store, container, task)
    members = _unzip(_download(link).content)
    assert blob == seen[0] and zip_path(task, added) in members and members == _current(store, container, task)


def test_an_old_composed_build_ending_inside_the_new_ones_commit_leaves_its_zip_whole(
        store: BlobStore, files: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a zip composed from parts (``zip_parts.combine``): the old build's combine runs between the new
    combine's staging and its commit. Before, the commit joined blocks of both into a corrupt zip."""
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

    new_zip = layout.results_zip_blob(task, planned["build"])
    seen = _run_old_build_at_the_new_commit(monkeypatch, new_zip, old_build)
    zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned, parts=parts))
    assert seen == [new_zip, layout.results_zip_blob(task, old_plan["build"])]
    assert _ready_link(store, container, task)[0] == new_zip
    assert _members(store, container, task) == _current(store, container, task)
    assert _members(store, container, task, seen[1]) != _members(store, container, task)  # the old one, whole


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
    """A clean's clock once every work blob written so far is older than ``zip_builds.STALE_WORK_S``."""
    return datetime.now(timezone.utc) + timedelta(seconds=zip_builds.STALE_WORK_S + 120)


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
