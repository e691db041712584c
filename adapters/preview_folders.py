"""A task's folder in the public static website: created by the preview step, read by the results API."""
from __future__ import annotations

import logging
import secrets
from datetime import datetime, timezone

from adapters.blobs import BlobStore
from core.readme import pages_gone
from core.settings import Settings
from gpu_batch import layout

logger = logging.getLogger(__name__)


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


def withdrawn(store: BlobStore, settings: Settings, task_id: str, since: float | None = None) -> bool:
    """Whether the task's pages were taken off the website (``delete_preview_folder``): then none is published again.
    With ``since`` (when a render began, seconds since the epoch), also whether the whole task was deleted after that
    (``DELETE /api/tasks/{id}``: ``core.task_deletion.tombstone_blob``), its website folders listed and deleted maybe
    before the render's last write."""
    if store.exists(settings.container, layout.previews_withdrawn_blob(task_id)):
        return True
    if since is None:
        return False
    from adapters.task_deletion import deleted_since

    return deleted_since(store, settings.container, task_id, since)


def delete_preview_folder(store: BlobStore, settings: Settings, task_id: str) -> int | None:
    """Take the task's pages off the public website: the withdrawal mark, every blob of its folder, then the record
    of the folder (the old address stays dead). None when there was no folder; else how many blobs went.

    Why the mark comes first: a render already past its checks (a repeat search's, a re-render's) may still be
    writing thumbnails into the folder, or create a new one. It looks for the mark after its last write
    (``activities.previews.run_previews``): if it finds none, the mark came later, and so did this deletion of
    the folder, which then takes what the render wrote; if it finds it, the render deletes what it wrote itself.
    Either way nothing written stays public. The mark stays: no later render of this task publishes again.

    Last, the generation's READMEs say the pages are gone (``restate_readmes``): every way pages go (``DELETE
    .../previews``, an expiry, a re-run's promotion) comes through here."""
    from adapters.compose import delete_prefix

    folder = existing_preview_folder(store, settings, task_id)
    if folder is None:
        return None
    store.write_bytes(settings.container, layout.previews_withdrawn_blob(task_id), folder.encode(), "text/plain")
    deleted = delete_prefix(store, settings.web_container, folder + "/")
    forget_folder(store, settings, task_id, folder)
    restate_readmes(store, settings, task_id)
    return deleted


# The variants whose README (``layout.readme_blob``) describes the generation's pages (adapters.share_links.VARIANTS)
README_VARIANTS = ("", layout.REPEATS_REMOVED)


def restate_readmes(store: BlobStore, settings: Settings, task_id: str, now: datetime | None = None) -> None:
    """Make each README of generation ``task_id`` say its pages were taken off the web (``core.readme.pages_gone``),
    best effort: the pages are gone whatever happens here, so a failure is logged, not raised (as
    ``activities.readme.publish_readme`` treats a README it cannot write).

    Each write carries the ETag of the README read (If-Match; Azure Storage, "Specifying conditional headers for Blob
    service operations": 412 when the blob changed), so a README written meanwhile by a render, which read the
    withdrawal mark itself, is left as that render wrote it."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError
    from azure.storage.blob import ContentSettings

    when = (now or datetime.now(timezone.utc)).replace(microsecond=0).isoformat()
    for variant in README_VARIANTS:
        name = layout.readme_blob(task_id, variant)
        client = store.service.get_blob_client(settings.container, name)
        try:
            got = client.download_blob()
            text = pages_gone(got.readall().decode("utf-8"), when)
            if text is None:  # no Preview field: nothing that says the pages are there
                continue
            client.upload_blob(text.encode("utf-8"), overwrite=True, etag=got.properties.etag,
                               match_condition=MatchConditions.IfNotModified,
                               content_settings=ContentSettings(content_type="text/plain; charset=utf-8"))
        except (ResourceNotFoundError, ResourceModifiedError):
            continue  # no README for this variant, or one written since it was read
        except Exception as exc:  # noqa: BLE001 - a help text: the pages are gone, and that stands
            logger.warning("task %s: %s could not be made to say the preview pages are gone (%s)", task_id, name,
                           type(exc).__name__)


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
