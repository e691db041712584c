"""The task status's ``repeated_detections`` block: which repeated-detection list is current, and its count.

Why this module exists: the task's orchestration writes the block once, when it merges its results (the merge's own
search, ``core.repeats.ORIGINAL_SEARCH``), and its status cannot change after the task ended; a search run again
(``POST /api/tasks/{id}/repeats/search``, ``orchestrations.repeat_search``) replaces the list afterwards. So the
status route (``api.starters.get_task``) lays the current list over the merge's block: from the search's own
status, which holds the new list's count once it is written (``RepeatSearchStatus.locations``, set after
``rank_repeats``), read with the task's status, so no blob is read in the common case; only while a later search
has not written its list yet (running, or failed before) is the list document itself read, since an earlier
search may have replaced the merge's list. Each block says which list it counts (``search``, and ``searched``:
when that search started), so "0" is never an old count passed off as the current one.

Must not: do I/O; the caller reads the statuses and the document and passes them in.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from core.repeats import ORIGINAL_SEARCH, list_search_id


def _task_of(task_id: str) -> str:
    """The task id of a task id or a generation key (``<task>/runs/<run>``, ``gpu_batch.layout.generation_key``)."""
    return task_id.split("/", 1)[0]


def search_again_command(task_id: str) -> str:
    """The command (and route) that runs the task's repeated-detection search again."""
    task_id = _task_of(task_id)
    return f"trapbatch repeats {task_id} --search (POST /api/tasks/{task_id}/repeats/search)"


def skipped_folders_hint(task_id: str, skipped: int) -> str:
    """What to do about ``skipped`` folders a search left out for holding more than ``max_folder_detections``
    eligible detections (the list document names them)."""
    return (f"{skipped} folder(s) held more eligible detections than the search takes per folder and were not "
            f"searched: trapbatch repeats {_task_of(task_id)} names them; search them with a higher "
            f"--max-folder-detections: {search_again_command(task_id)}, or split them into subfolders")


def merge_repeats_ref(task_id: str, merged: Mapping[str, Any]) -> dict[str, Any]:
    """The block the task's orchestration writes from its merge (``core.contracts.MergeOutput``): how many places,
    where the list is, and, when some folders were too large to search or the search failed (the task completes
    with its results either way), that and what to do."""
    error = merged.get("repeat_search_error")
    if error is not None:  # no document was written: nothing to list or remove until it runs again
        return {"locations": 0, "blob": "", "error": f"the repeated-detection search failed: {error}",
                "hint": f"the results and exports are complete without it; run it again: "
                        f"{search_again_command(task_id)}"}
    ref: dict[str, Any] = {"locations": merged.get("repeated_locations", 0), "blob": merged.get("repeats_blob", "")}
    skipped = merged.get("repeat_folders_skipped", 0)
    if skipped:
        ref["folders_skipped"] = skipped
        ref["detections_skipped"] = merged.get("repeat_detections_skipped", 0)
        ref["hint"] = skipped_folders_hint(task_id, skipped)
    return ref


def _searched_ref(task_id: str, locations: int, blob: str, search: str, searched: str | None,
                  folders_skipped: int, detections_skipped: int) -> dict[str, Any]:
    ref: dict[str, Any] = {"locations": locations, "blob": blob, "search": search, "searched": searched or None}
    if folders_skipped:
        ref["folders_skipped"] = folders_skipped
        ref["detections_skipped"] = detections_skipped
        ref["hint"] = skipped_folders_hint(task_id, folders_skipped)
    return ref


def current_repeats_ref(task_id: str, merged_ref: Mapping[str, Any], searching: Mapping[str, Any] | None,
                        read_list: Callable[[], Mapping[str, Any] | None], blob: str) -> dict[str, Any]:
    """The status's ``repeated_detections`` for the task's current list.

    ``merged_ref``: the block the task's status holds (``merge_repeats_ref``); ``searching``: the latest search run
    again over the served generation (``api.repeat_search.search_status``; None when none ran); ``read_list``: reads
    the generation's list document, ``blob`` (called only while that search has not written its list); ``task_id``:
    the task's id, for the commands a hint names.

    * no search ran again: the merge's block, ``search`` ``"merge"``;
    * the latest search wrote its list (its status has ``locations``, whether it then completed or its page failed):
      that list's count, skipped folders and id, with ``searched`` its start, and not the merge's error;
    * it has not written it yet (running, or failed before it did): the list it would replace, read from storage:
      the merge's block when that is still the merge's list (or none was ever written), else the earlier search's.
    """
    if searching is not None and isinstance(searching.get("locations"), int):
        return _searched_ref(task_id, int(searching["locations"]), blob, str(searching.get("search") or ""),
                             searching.get("started"), int(searching.get("folders_skipped") or 0),
                             int(searching.get("detections_skipped") or 0))
    if searching is not None:
        doc = read_list()
        if doc is not None and list_search_id(doc) != ORIGINAL_SEARCH:
            listed = doc.get("skipped_folders")
            skipped: Mapping[str, Any] = listed if isinstance(listed, Mapping) else {}
            return _searched_ref(task_id, len(doc.get("locations") or []), blob, list_search_id(doc),
                                 doc.get("searched"), int(skipped.get("folders") or 0),
                                 int(skipped.get("detections") or 0))
    return {**merged_ref, "search": ORIGINAL_SEARCH}
