"""A finished task's status counts its CURRENT repeated-detection list: the merge's count is fixed in the task's
status when it ends, and ``trapbatch repeats --search`` (``POST .../repeats/search``) replaces the list afterwards.
Seen against devhost: the search found 33 places and ``status`` still said 0."""
from __future__ import annotations

import asyncio
import json
from enum import Enum
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest

from adapters import clients
from api import starters
from core.ids import repeat_search_instance_id
from core.repeats_status import current_repeats_ref, merge_repeats_ref

TASK = "task-0123456789abcdef0123"
BLOB = f"results/{TASK}/repeated-detections.json"
MERGED = {"locations": 0, "blob": BLOB}
FAILED_MERGE = {"locations": 0, "blob": "", "error": "the repeated-detection search failed: Timeout",
                "hint": "run it again"}


class _Runtime(Enum):
    Running = "Running"
    Completed = "Completed"
    Failed = "Failed"


class FakeClient:
    """The task's status (Completed, its merge's ``repeated_detections``) and its latest search's, if any."""

    def __init__(self, repeats: dict[str, Any], search: tuple[str, dict[str, Any], dict[str, Any]] | None,
                 generation: str = "") -> None:
        task_input = {"task_id": TASK, **({"generation": generation} if generation else {})}
        self.statuses = {TASK: SimpleNamespace(
            runtime_status=_Runtime.Completed, output=None, input_=json.dumps(task_input),
            custom_status={"stage": "completed", "images": 10, "repeated_detections": repeats})}
        if search is not None:
            runtime, custom, started = search
            self.statuses[repeat_search_instance_id(TASK)] = SimpleNamespace(
                runtime_status=_Runtime(runtime), custom_status=custom, output="boom", input_=json.dumps(started))

    async def get_status(self, instance_id: str, *args: Any, **kwargs: Any) -> Any:
        return self.statuses.get(instance_id, SimpleNamespace(runtime_status=None, custom_status=None, output=None))


class Store:
    """The generation's list document, counting its reads."""

    def __init__(self, doc: dict[str, Any] | None) -> None:
        self.doc = doc
        self.reads: list[str] = []

    def read_json_or_none(self, container: str, name: str) -> Any:
        self.reads.append(name)
        return self.doc


def _get(client: FakeClient, store: Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(clients, "store", lambda s=None: store)
    monkeypatch.setattr(clients, "settings", lambda: SimpleNamespace(container="trapbatch"))
    handler = starters.get_task._function.get_user_function().__wrapped__  # http_edge(get_task), no binding
    req = func.HttpRequest("GET", f"http://h/api/tasks/{TASK}", body=b"", route_params={"task_id": TASK})
    response = asyncio.run(handler(req, client))
    assert response.status_code == 200, response.get_body()
    repeats: dict[str, Any] = json.loads(response.get_body())["repeated_detections"]
    return repeats


SEARCH = "s20261206T120000Z-a1b2c3"
STARTED = "2026-12-06T12:00:00+00:00"


def test_status_counts_the_list_a_search_run_again_wrote_without_reading_it(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(None)
    custom = {"stage": "completed", "search": SEARCH, "started": STARTED, "locations": 33}
    repeats = _get(FakeClient(MERGED, ("Completed", custom, {"task_id": TASK, "search": SEARCH})), store,
                   monkeypatch)
    assert repeats == {"locations": 33, "blob": BLOB, "search": SEARCH, "searched": STARTED}
    assert store.reads == []  # the search's status holds the count: no blob read per status call


def test_a_search_that_replaced_a_failed_merge_search_clears_its_error_and_names_skipped_folders(
        monkeypatch: pytest.MonkeyPatch) -> None:
    custom = {"stage": "completed", "search": SEARCH, "started": STARTED, "locations": 5, "folders_skipped": 2,
              "detections_skipped": 1_700_000}
    repeats = _get(FakeClient(FAILED_MERGE, ("Completed", custom, {"task_id": TASK, "search": SEARCH})), Store(None),
                   monkeypatch)
    assert "error" not in repeats and repeats["locations"] == 5 and repeats["blob"] == BLOB
    assert (repeats["folders_skipped"], repeats["detections_skipped"]) == (2, 1_700_000)
    assert f"trapbatch repeats {TASK} --search" in repeats["hint"]


def test_without_a_search_run_again_the_status_names_the_merges_list(monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(None)
    assert _get(FakeClient(MERGED, None), store, monkeypatch) == {**MERGED, "search": "merge"}
    assert store.reads == []


def test_a_search_still_running_counts_the_list_it_will_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before it writes its list a running (or failed) search has no count; the current list may be an earlier
    search's, so the document is read (only then)."""
    earlier = {"search": "s1", "searched": "2026-12-05T10:00:00+00:00", "locations": [{"id": "r00001"}] * 33,
               "skipped_folders": {"folders": 1, "detections": 900_000}}
    store = Store(earlier)
    running = ("Running", {"stage": "searching", "search": SEARCH, "started": STARTED},
               {"task_id": TASK, "search": SEARCH})
    repeats = _get(FakeClient(MERGED, running), store, monkeypatch)
    assert (repeats["locations"], repeats["search"], repeats["searched"]) == (33, "s1", earlier["searched"])
    assert repeats["folders_skipped"] == 1 and store.reads == [BLOB]
    failed = ("Failed", {"stage": "searching", "search": SEARCH, "started": STARTED},
              {"task_id": TASK, "search": SEARCH})
    assert _get(FakeClient(MERGED, failed), Store({"locations": [{}] * 4}), monkeypatch) == {**MERGED,
                                                                                            "search": "merge"}


def test_a_search_of_an_earlier_generation_is_not_the_rerun_tasks_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run that completed serves its own generation (``<task>/runs/<run>``): a search over the first one's
    results, before the re-run, is not its list."""
    custom = {"stage": "completed", "search": SEARCH, "started": STARTED, "locations": 33}
    run = "r202612061200ab"
    repeats = _get(FakeClient(MERGED, ("Completed", custom, {"task_id": TASK, "search": SEARCH}), generation=run),
                   Store(None), monkeypatch)
    assert repeats == {**MERGED, "search": "merge"}
    rerun = _get(FakeClient(MERGED, ("Completed", custom, {"task_id": f"{TASK}/runs/{run}", "search": SEARCH}),
                            generation=run), Store(None), monkeypatch)
    assert rerun["locations"] == 33 and rerun["blob"] == f"results/{TASK}/runs/{run}/repeated-detections.json"


def test_the_merges_block_is_what_the_orchestration_wrote_before() -> None:
    """``orchestrations.task`` builds its status from ``merge_repeats_ref``: the same fields and words as before it
    moved to core (recorded statuses and notifications keep their shape)."""
    merged = {"repeated_locations": 3, "repeats_blob": BLOB, "repeat_folders_skipped": 1,
              "repeat_detections_skipped": 9}
    assert merge_repeats_ref(TASK, merged) == {
        "locations": 3, "blob": BLOB, "folders_skipped": 1, "detections_skipped": 9,
        "hint": f"1 folder(s) held more eligible detections than the search takes per folder and were not searched: "
                f"trapbatch repeats {TASK} names them; search them with a higher --max-folder-detections: "
                f"trapbatch repeats {TASK} --search (POST /api/tasks/{TASK}/repeats/search), or split them into "
                "subfolders"}
    assert merge_repeats_ref(TASK, {"repeat_search_error": "Timeout", "repeats_blob": BLOB}) == {
        "locations": 0, "blob": "", "error": "the repeated-detection search failed: Timeout",
        "hint": f"the results and exports are complete without it; run it again: trapbatch repeats {TASK} --search "
                f"(POST /api/tasks/{TASK}/repeats/search)"}
    assert current_repeats_ref(TASK, FAILED_MERGE, None, lambda: pytest.fail("not read"), BLOB)["error"]
    # a merge whose output has no repeated_locations (NotRequired: activities.merge sets it only when its streams
    # searched) counts 0 places, not a null count in the status
    assert merge_repeats_ref(TASK, {"repeats_blob": BLOB}) == {"locations": 0, "blob": BLOB}


def test_the_cli_summary_names_the_list_a_search_made(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import _summary

    _summary({"id": TASK, "stage": "completed", "repeated_detections": {
        "locations": 33, "blob": BLOB, "search": SEARCH, "searched": STARTED}})
    shown = " ".join(capsys.readouterr().out.split())
    assert f"33 (list {SEARCH} of {STARTED}, trapbatch repeats ID)" in shown
    _summary({"id": TASK, "stage": "completed", "repeated_detections": {"locations": 2, "blob": BLOB,
                                                                        "search": "merge"}})
    assert "2 (trapbatch repeats ID)" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("failing", ["search status", "list"])
def test_a_status_whose_search_cannot_be_read_just_now_still_answers_with_the_merges_list(
        failing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The current list costs a finished task's status one more read (the search's status; its list document while a
    later search has not written its own). A busy task hub or storage there failed the whole status, which answered
    before that read was added: now it answers with the merge's block, as before, saying the current list could not
    be read and where to see it."""
    from azure.core.exceptions import ServiceRequestError

    custom = {"stage": "searching", "search": SEARCH, "started": STARTED}
    client = FakeClient(MERGED, ("Running", custom, {"task_id": TASK, "search": SEARCH}))
    store = Store(None)
    if failing == "search status":
        async def busy(instance_id: str, *args: Any, **kwargs: Any) -> Any:
            if instance_id == repeat_search_instance_id(TASK):
                raise ServiceRequestError("the task hub did not answer")
            return await FakeClient.get_status(client, instance_id, *args, **kwargs)

        monkeypatch.setattr(client, "get_status", busy)
    else:
        def unreadable(container: str, name: str) -> Any:
            raise ServiceRequestError("storage did not answer")

        monkeypatch.setattr(store, "read_json_or_none", unreadable)
    repeats = _get(client, store, monkeypatch)
    assert {k: repeats[k] for k in MERGED} == MERGED, repeats
    assert f"trapbatch repeats {TASK}" in repeats["note"] and "could not be read" in repeats["note"], repeats
