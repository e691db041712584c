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


def delete_preview_folder(store: BlobStore, settings: Settings, task_id: str) -> int | None:
    """Take the task's pages off the public website: every blob of its folder, then the record of the folder (so a
    later re-render gets a new random address and the old one stays dead). None when there was no folder; else how
    many blobs went."""
    from adapters.compose import delete_prefix

    folder = existing_preview_folder(store, settings, task_id)
    if folder is None:
        return None
    deleted = delete_prefix(store, settings.web_container, folder + "/")
    store.service.get_blob_client(settings.container, layout.preview_folder_blob(task_id)).delete_blob()
    return deleted
