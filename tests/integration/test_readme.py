"""The results README against Azurite (``activities.readme``): it lists exactly the files a variant has when it is
written (what the results answer links, the download fetches and the zip holds), and follows them as they change."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from activities.fanin import run_prepare_removal
from activities.merge import run_remove_repeats
from activities.previews import run_previews
from activities.readme import write_readme
from adapters import share_links
from adapters.blobs import BlobStore, service_client
from adapters.preview_folders import delete_preview_folder
from core.settings import Settings
from gpu_batch import layout
from tests.integration.test_enumerate_merge import _merged_task_of_jpegs
from tests.readme_listing import listed_paths

NOW = datetime(2026, 12, 5, 18, 0, tzinfo=timezone.utc)


@pytest.fixture
def env(storage_connection: str, unique_name: str) -> tuple[Settings, BlobStore, str]:
    settings = Settings.from_env({"AzureWebJobsStorage": storage_connection, "TRAPBATCH_CONTAINER": unique_name + "s"})
    store = BlobStore(service_client(storage_connection))
    store.ensure_container(unique_name)
    return settings, store, unique_name


def _readme(store: BlobStore, settings: Settings, key: str, variant: str = "") -> str:
    return store.read_bytes(settings.container, layout.readme_blob(key, variant)).decode("utf-8")


def _linked(store: BlobStore, settings: Settings, key: str, variant: str = "") -> list[str]:
    """The variant's files as the results answer names them, relative to the results folder."""
    found = share_links.result_files(store, settings.container, key)[variant or "original"]
    names = share_links.all_names({"variant": found})
    return sorted(n[len(layout.results_prefix(key)):] for n in names)


def test_the_readme_lists_exactly_the_files_there_as_they_change(env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a", "b"), 5)
    assert write_readme(store, settings, tid, now=NOW) == layout.readme_blob(tid)
    text = _readme(store, settings, tid)
    assert sorted(listed_paths(text)) == _linked(store, settings, tid) == [
        "README.txt", "detections.csv", "detections.json", "repeated-detections.json"]
    flat = " ".join(text.split())
    for words in (tid, f'container "{source}"', "m.pt", "10 images", "Written: 2026-12-05T18:00:00+00:00",
                  "Preview: not published"):
        assert words in flat, words
    assert "failed" not in text.split("\nFiles\n")[0] and "cut short" not in text.split("\nFiles\n")[0]

    # pages published, a photo cut short, a CSV at another threshold and an export: written again, all named
    run_previews(tid, "m.pt", "", settings, store)
    store.write_bytes(settings.container, layout.damaged_blob(tid), b"file\r\na/img1.jpg\r\n")
    store.write_bytes(settings.container, layout.threshold_csv_blob(tid, 0.35), b"file\n")
    store.write_bytes(settings.container, layout.coco_blob(tid), b"{}")
    for n in (1, 2, 3):
        store.write_bytes(settings.container, layout.zooniverse_batch_blob(tid, n), b"x\n")
    store.write_bytes(settings.container, layout.exports_prefix(tid) + ".parts/00000.x", b"work")  # no one's file
    write_readme(store, settings, tid, now=NOW)
    text = _readme(store, settings, tid)
    assert sorted(listed_paths(text)) == _linked(store, settings, tid)
    assert {"damaged.csv", "detections.threshold-0.35.csv", "exports/coco.json",
            "exports/zooniverse/batch-003.csv"} <= set(listed_paths(text)) and ".parts" not in text
    flat = " ".join(text.split())
    assert "1 cut short (damaged.csv)" in flat and "published on the web" in flat
    # the pages taken off: the next write says so rather than point at them
    delete_preview_folder(store, settings, tid)
    write_readme(store, settings, tid, now=NOW)
    assert "Preview: not published" in " ".join(_readme(store, settings, tid).split())

    # no repeats-removed results: no README of theirs
    assert write_readme(store, settings, tid, layout.REPEATS_REMOVED) is None
    assert not store.exists(settings.container, layout.readme_blob(tid, layout.REPEATS_REMOVED))


def test_a_removal_has_its_own_readme_and_a_new_one_deletes_it_with_its_stale_files(
        env: tuple[Settings, BlobStore, str]) -> None:
    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a",), 5)
    variant = layout.REPEATS_REMOVED
    run_remove_repeats(tid, "m.pt", "2026-11-22T00:00:00", [], settings, store)
    store.write_bytes(settings.container, layout.threshold_csv_blob(tid, 0.5, variant), b"file\n")
    write_readme(store, settings, tid, variant, now=NOW)
    text = _readme(store, settings, tid, variant)
    assert sorted(listed_paths(text)) == _linked(store, settings, tid, variant) == [
        "README.repeats-removed.txt", "detections.repeats-removed.csv", "detections.repeats-removed.json",
        "detections.repeats-removed.threshold-0.5.csv"]
    assert "README.repeats-removed.txt\n    This file." in text
    assert "repeated detections at 0 places removed" in " ".join(text.split())
    assert "README.txt" not in listed_paths(text)  # the original's, written by its own step
    # a new removal deletes what the earlier one made from its results, the README naming them with them
    run_prepare_removal(tid, [], settings, store)
    assert not store.exists(settings.container, layout.readme_blob(tid, variant))
    assert "readme" not in share_links.result_files(store, settings.container, tid)[variant]


def test_a_readme_that_cannot_be_written_leaves_the_previews_step_and_its_answer_as_they_were(
        env: tuple[Settings, BlobStore, str], storage_connection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README is a help for people, not a result: its write failing (storage refusing it, or a fact it cannot
    read) must not fail the previews activity, the last step of a task whose results are all written (its retries
    would render every page again, and then fail the task at publishing), nor a re-render, search or removal."""
    from activities import readme
    from activities.previews import render_previews

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a",), 5)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)

    def refused(*args: object, **kwargs: object) -> None:
        raise RuntimeError("AuthorizationPermissionMismatch writing the README")

    real_facts = readme.readme_facts
    monkeypatch.setattr(readme, "readme_facts", refused)
    shell = render_previews._function.get_user_function()  # type: ignore[attr-defined]
    out = shell({"task_id": tid, "model": "m.pt", "request_name": ""})

    assert out["container"] and out["counts"] and "not_published" not in out  # the pages were written
    assert not store.exists(settings.container, layout.readme_blob(tid))
    # said in the step's output, so the task's status says it, not a log line alone
    assert out["readme_error"].startswith("README.txt not written (RuntimeError)") and "results are complete" in out[
        "readme_error"]
    monkeypatch.setattr(readme, "readme_facts", real_facts)  # written again: nothing said
    assert "readme_error" not in shell({"task_id": tid, "model": "m.pt", "request_name": ""})
    assert store.exists(settings.container, layout.readme_blob(tid))


def _without_preview(text: str) -> list[str]:
    """The README's lines less its Preview field (the ``Preview:`` line and its continuation lines)."""
    kept: list[str] = []
    inside = False
    for line in text.split("\n"):
        inside = line.startswith("Preview:") or (inside and line.startswith(" " * 12))
        if not inside:
            kept.append(line)
    return kept


def test_pages_taken_off_the_web_by_a_delete_or_an_expiry_make_the_readmes_say_they_are_gone(
        env: tuple[Settings, BlobStore, str], storage_connection: str, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Preview field says whether the pages were published when it was written; when they go
    (``DELETE .../previews``, the expiry's activity; a re-run's promotion deletes through the same function) it must
    stop pointing at them. Only that field changes; a README that cannot be restated does not fail the deletion."""
    from activities.expiry import delete_previews_when_due
    from api.starters import _delete_served_previews

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a",), 5)
    run_previews(tid, "m.pt", "", settings, store)
    run_remove_repeats(tid, "m.pt", "2026-11-22T00:00:00", [], settings, store)
    before = {}
    for variant in ("", layout.REPEATS_REMOVED):
        write_readme(store, settings, tid, variant, now=NOW)
        before[variant] = _readme(store, settings, tid, variant)
        assert "Preview: published on the web" in " ".join(before[variant].split())

    assert _delete_served_previews(settings, tid)  # what DELETE /api/tasks/{id}/previews does
    for variant in ("", layout.REPEATS_REMOVED):
        after = _readme(store, settings, tid, variant)
        flat = " ".join(after.split())
        assert "Preview: taken off the web at " in flat and "its address no longer works" in flat, after
        assert "published on the web" not in flat
        assert _without_preview(after) == _without_preview(before[variant])  # every other fact and file stands

    # the expiry's activity, on another task; its repeats-removed README unreadable as text: the deletion stands
    other = unique_name + "x"
    store.ensure_container(other)
    expiring = _merged_task_of_jpegs(settings, store, other, ("b",), 5)
    run_previews(expiring, "m.pt", "", settings, store)
    write_readme(store, settings, expiring, now=NOW)
    store.write_bytes(settings.container, layout.readme_blob(expiring, layout.REPEATS_REMOVED), b"\xff\xfe\x00")
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection)
    monkeypatch.setenv("TRAPBATCH_CONTAINER", settings.container)
    shell = delete_previews_when_due._function.get_user_function()  # type: ignore[attr-defined]
    assert shell({"task_id": expiring})["deleted"] > 0
    assert "Preview: taken off the web at " in " ".join(_readme(store, settings, expiring).split())
    assert store.read_bytes(settings.container, layout.readme_blob(expiring, layout.REPEATS_REMOVED)) == b"\xff\xfe\x00"


def test_a_readme_write_that_storage_refuses_busy_is_tried_again(env: tuple[Settings, BlobStore, str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Storage answering busy (503 ServerBusy) past the SDK's own tries is tried again after a pause, as it asks of
    clients, and the README is written; a refusal that is not busy is said at once, tried once. Fails without the
    busy retry (the first 503 left the results without their README: the storage throttling test in CI)."""
    from azure.core.exceptions import HttpResponseError

    from activities import readme

    settings, store, source = env
    tid = _merged_task_of_jpegs(settings, store, source, ("a",), 5)
    real_facts = readme.readme_facts
    calls: list[int] = []
    pauses: list[float] = []

    def busy_twice(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) <= 2:
            error = HttpResponseError("Operations per second is over the account limit.")
            error.status_code = 503
            raise error
        return real_facts(*args, **kwargs)

    monkeypatch.setattr(readme, "readme_facts", busy_twice)
    monkeypatch.setattr(readme.time, "sleep", pauses.append)
    assert readme.publish_readme(store, settings, tid) == ""
    assert len(calls) == 3 and pauses == list(readme.README_BUSY_WAITS_S[:2])
    assert store.exists(settings.container, layout.readme_blob(tid))

    calls.clear()
    pauses.clear()

    def refused(*args: object, **kwargs: object) -> object:
        calls.append(1)
        raise RuntimeError("AuthorizationPermissionMismatch writing the README")

    monkeypatch.setattr(readme, "readme_facts", refused)
    assert readme.publish_readme(store, settings, tid).startswith("README.txt not written (RuntimeError)")
    assert len(calls) == 1 and pauses == []
