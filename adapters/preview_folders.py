"""A task's folder in the public static website: created by the preview step, read by the results API."""
from __future__ import annotations

import secrets

from adapters.blobs import BlobStore
from core.settings import Settings
from gpu_batch import layout


def preview_folder(store: BlobStore, settings: Settings, task_id: str) -> str:
    """The task's folder in the static website, ``<task>-<128 random bits>``, created on first use.

    Why random: the static website is public to anyone with a URL, and task ids are hashes of the request (container,
    prefix, model...), which an outsider can often guess; the thumbnails show a partner's photos. The folder name
    lives only in the private results container: never in the orchestration history or status (plain tables), so
    the results API (behind the function key) is the way to learn it.
    """
    name = layout.preview_folder_blob(task_id)
    store.create_bytes(settings.container, name, layout.preview_folder_name(task_id, secrets.token_hex(16)).encode())
    return store.read_bytes(settings.container, name).decode().strip()  # whoever created it first


def existing_preview_folder(store: BlobStore, settings: Settings, task_id: str) -> str | None:
    """``preview_folder`` for readers: None before the previews were first rendered."""
    data = store.read_bytes_or_none(settings.container, layout.preview_folder_blob(task_id))
    return data.decode().strip() if data is not None else None


def withdrawn(store: BlobStore, settings: Settings, task_id: str) -> bool:
    """Whether the task's pages were taken off the website (``delete_preview_folder``): then none is published again."""
    return store.exists(settings.container, layout.previews_withdrawn_blob(task_id))


def delete_preview_folder(store: BlobStore, settings: Settings, task_id: str) -> int | None:
    """Take the task's pages off the public website: the withdrawal mark, every blob of its folder, then the record
    of the folder (the old address stays dead). None when there was no folder; else how many blobs went.

    Why the mark comes first: a render already past its checks (a repeat search's, a re-render's) may still be
    writing thumbnails into the folder, or create a new one. It looks for the mark after its last write
    (``activities.previews.run_previews``): if it finds none, the mark came later, and so did this deletion of
    the folder, which then takes what the render wrote; if it finds it, the render deletes what it wrote itself.
    Either way nothing written stays public. The mark stays: no later render of this task publishes again."""
    from adapters.compose import delete_prefix

    folder = existing_preview_folder(store, settings, task_id)
    if folder is None:
        return None
    store.write_bytes(settings.container, layout.previews_withdrawn_blob(task_id), folder.encode(), "text/plain")
    deleted = delete_prefix(store, settings.web_container, folder + "/")
    forget_folder(store, settings, task_id, folder)
    return deleted


def forget_folder(store: BlobStore, settings: Settings, task_id: str, folder: str) -> None:
    """Delete the record of the task's folder if it still names ``folder`` (a render may have made a new one).

    The delete carries the record's ETag read with it (If-Match; Azure Storage, "Specifying conditional headers for
    Blob service operations": the operation runs only if the ETag matches, else 412), so a record rewritten in
    between is left alone."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

    client = store.service.get_blob_client(settings.container, layout.preview_folder_blob(task_id))
    try:
        record = client.download_blob()
        if record.readall().decode().strip() == folder:
            client.delete_blob(etag=record.properties.etag, match_condition=MatchConditions.IfNotModified)
    except (ResourceNotFoundError, ResourceModifiedError):
        pass  # gone already, or rewritten since it was read: not this folder's record
