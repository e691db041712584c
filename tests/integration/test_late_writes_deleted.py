"""A task's helper calls that run on past its deletion (a preview expiry's deletion of the pages, a terminated zip
build's one pass, parts and combine: ``adapters.late_writes``) leave nothing of the task behind, on Azurite.

Each race test runs the real deletion (``delete_task_blobs``) inside the call, after its check and before its last
write: the write lands after the deletion listed the task's prefixes, as an activity left running by a terminate
would. Without the guard its blob stays (the README's known gap before)."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from activities import results_zip as rz
from activities.expiry import expire_previews
from adapters import preview_folders, results_bundle, zip_parts
from adapters.block_writer import BlockBlobWriter
from adapters.blobs import BlobStore
from adapters.task_deletion import delete_task_blobs, has_blobs
from core import contracts as c
from core import task_deletion
from core.errors import RunSuperseded
from core.settings import Settings
from core.zipformat import part_inputs
from gpu_batch import layout
from tests.integration.test_results_zip_parts import files  # noqa: F401 - the fixture

PART_BYTES = 4096  # the fixture's files make several parts of this


def _settings(storage_connection: str, container: str) -> Settings:
    return Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": container})


def _left(store: BlobStore, settings: Settings, task: str) -> list[str]:
    """Every name of the task left in the state container and on the website."""
    names = [n for prefix in task_deletion.state_prefixes(task) for n in store.list_names(settings.container, prefix)]
    if store.container_exists(settings.web_container):
        names += list(store.list_names(settings.web_container, task_deletion.web_prefix(task)))
    return names


def _deleting_first(store: BlobStore, settings: Settings, task: str, write: Callable[..., Any]) -> Callable[..., Any]:
    """``write`` that first deletes the task (all of it, done): its own write then comes after the deletion."""
    def deleted_then_written(*args: Any, **kwargs: Any) -> Any:
        assert delete_task_blobs(store, settings, task, 150.0).done
        assert not has_blobs(store, settings, task)
        return write(*args, **kwargs)
    return deleted_then_written


def test_a_one_pass_zip_build_under_way_at_the_deletion_takes_back_its_zip_and_manifest(
        store: BlobStore, files: Any, storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    container, task, _ = files
    settings = _settings(storage_connection, container)
    # the zip is written; the deletion comes before its manifest, which would be left under results/<task>/
    monkeypatch.setattr(results_bundle, "write_manifest",
                        _deleting_first(store, settings, task, results_bundle.write_manifest))
    with pytest.raises(RunSuperseded, match="deleted"):
        rz.build_unless_deleted(store, container, task)
    assert _left(store, settings, task) == []


def test_a_zip_part_under_way_at_the_deletion_takes_back_its_work_blob(
        store: BlobStore, files: Any, storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    container, task, _ = files
    settings = _settings(storage_connection, container)
    planned = rz.run_build(store, container, task, PART_BYTES)
    asked = part_inputs(task, planned["plan"])[0]

    class DeletedBeforeCommit(BlockBlobWriter):  # the part's blocks are read and staged, then the deletion
        def close(self) -> None:
            if not self.closed:
                assert delete_task_blobs(store, settings, task, 150.0).done
            super().close()

    monkeypatch.setattr(zip_parts, "BlockBlobWriter", DeletedBeforeCommit)
    with pytest.raises(RunSuperseded, match="part 0"):
        rz.part_unless_deleted(store, container, asked)
    assert _left(store, settings, task) == []


def test_a_zip_combine_under_way_at_the_deletion_takes_back_its_zip_and_manifest(
        store: BlobStore, files: Any, storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    container, task, _ = files
    settings = _settings(storage_connection, container)
    planned = rz.run_build(store, container, task, PART_BYTES)
    parts = [rz.part_unless_deleted(store, container, asked) for asked in part_inputs(task, planned["plan"])]
    monkeypatch.setattr(zip_parts, "write_manifest",
                        _deleting_first(store, settings, task, results_bundle.write_manifest))
    with pytest.raises(RunSuperseded, match="combine"):
        rz.combine_unless_deleted(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned["plan"],
                                                                             parts=parts))
    assert _left(store, settings, task) == []


@pytest.mark.parametrize("step", ["build", "part", "combine"])
def test_a_zip_step_that_begins_once_the_deletion_began_writes_nothing_and_a_fresh_tasks_does(
        store: BlobStore, files: Any, step: str) -> None:  # noqa: F811
    """The deletion's mark "in progress" (a deletion left at 202, or under way): no write at all. A mark whose
    deletion was done well before the call began (the fresh task of the same request) stops nothing."""
    container, task, _ = files
    planned = rz.run_build(store, container, task, PART_BYTES)
    asked = part_inputs(task, planned["plan"])[0]
    combine_input = c.ResultsZipCombineInput(task_id=task, plan=planned["plan"], parts=[  # written for a combine
        zip_parts.deflate_part(store, container, a) for a in part_inputs(task, planned["plan"])] if step == "combine"
        else [])
    zips = layout.results_zip_folder(task)
    call: Callable[[], Any] = {"build": lambda: rz.build_unless_deleted(store, container, task),
            "part": lambda: rz.part_unless_deleted(store, container, asked),
            "combine": lambda: rz.combine_unless_deleted(store, container, combine_input)}[step]
    before = sorted(store.list_names(container, layout.task_prefix(task))) + sorted(store.list_names(container, zips))
    store.write_json(container, task_deletion.tombstone_blob(task), task_deletion.tombstone(task, time.time()))
    with pytest.raises(RunSuperseded, match="deleted"):
        call()
    after = sorted(store.list_names(container, layout.task_prefix(task))) + sorted(store.list_names(container, zips))
    assert after == before

    long_ago = time.time() - 3600
    store.write_json(container, task_deletion.tombstone_blob(task), task_deletion.tombstone(task, long_ago, long_ago))
    call()
    written = sorted(store.list_names(container, layout.task_prefix(task))) + sorted(store.list_names(container, zips))
    assert written != after


def test_an_expiry_under_way_at_the_deletion_takes_back_its_withdrawal_mark(
        store: BlobStore, storage_connection: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The expiry read the record of the task's folder; the deletion then removes everything; the expiry writes its
    previews-withdrawn file (under results/<task>/) and would leave it. It deletes it once written."""
    settings = _settings(storage_connection, unique_name + "e")
    store.ensure_container(settings.container)
    store.ensure_container(settings.web_container)
    task = "task-" + unique_name[-12:]
    folder = preview_folders.preview_folder(store, settings, task)
    store.write_bytes(settings.web_container, f"{folder}/index.html", b"<html></html>")
    store.write_bytes(settings.container, layout.readme_blob(task), b"Preview: published\n")
    assert sorted(_left(store, settings, task)) == sorted([layout.preview_folder_blob(task), layout.readme_blob(task),
                                                           f"{folder}/index.html"])
    read = preview_folders.existing_preview_folder

    def read_then_deleted(*args: Any) -> str | None:
        found = read(*args)
        assert delete_task_blobs(store, settings, task, 150.0).done
        return found

    monkeypatch.setattr(preview_folders, "existing_preview_folder", read_then_deleted)
    with pytest.raises(RunSuperseded, match="preview expiry"):
        expire_previews(store, settings, task)
    assert _left(store, settings, task) == []
