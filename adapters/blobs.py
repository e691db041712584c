"""The only blob-storage code of the Functions app: a small ``BlobStore`` over azure-storage-blob.

Why a wrapper: activities need a few operations (list, read, write JSON/bytes/files, exists, ensure container), and
no activity should build SDK clients itself (storage errors are mapped in one place: ``adapters.storage_errors``). Clients are built from settings once per process
(``blob_store``), never at import time and never per call. Identity-based connections (``identity:<blob uri>``, from
``AzureWebJobsStorage__accountName``) use a managed identity; nothing here logs a key or SAS. Listings go through
``adapters.listing`` (List Blobs parsed for the few fields used, through the same client's pipeline), not the SDK's
``list_blobs``/``walk_blobs``: at millions of blobs their model deserialisation was most of the enumeration's CPU.
Small reads and writes (``read_bytes``, ``write_bytes``: the activities' plans, manifests, cursors and indexes) go
through ``adapters.blob_requests`` (Get Blob and Put Blob on the same pipeline, about half the SDK's CPU each).
"""
from __future__ import annotations

import functools
import io
import json
from typing import IO, Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from azure.core import MatchConditions
from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from adapters import blob_requests, listing
from adapters.transport import shared_session_options, transport_options
from core.deadline import Deadline
from core.errors import ContainerNotFound, StorageConflict
from gpu_batch.storage_refs import deadline_storage_options


def service_client(connection: str, options: dict[str, Any] | None = None,
                   credential: Any = None) -> BlobServiceClient:
    """The client of trapbatch's own account; ``options``: the client's keyword arguments (None:
    ``transport_options``, with the storage SDK's retry policy and timeouts); ``credential``: an identity
    connection's token credential (None: the app's shared one, ``adapters.identity.app_credential``)."""
    options = transport_options() if options is None else options
    if connection.startswith("identity:"):  # AppCredential: a token endpoint that did not answer is busy, not denied
        from adapters.identity import app_credential

        return BlobServiceClient(connection[len("identity:"):], credential=credential or app_credential(), **options)
    return BlobServiceClient.from_connection_string(connection, **options)


class BlobStore:
    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    @property
    def account(self) -> str:
        return str(self.service.account_name)

    @property
    def endpoint(self) -> str:
        """The account's blob endpoint, ``scheme://host[/account]`` (Azurite keeps the account in the path:
        ``http://127.0.0.1:10000/devstoreaccount1``), never with a credential. Why not the client's ``url`` or
        ``primary_endpoint``: azure-storage-blob writes a connection string's SharedAccessSignature into them ("The
        full endpoint URL to this entity, including SAS token if used": ``StorageAccountHostsMixin.url``; checked
        with 12.31: ``BlobEndpoint=...;SharedAccessSignature=sv=...`` gives ``https://acct.blob.core.windows.net/?sv=
        ...``); ``scheme`` and ``primary_hostname`` are the parsed endpoint alone."""
        return f"{self.service.scheme}://{str(self.service.primary_hostname).rstrip('/')}"

    def ensure_container(self, container: str) -> None:
        try:
            self.service.create_container(container)
        except ResourceExistsError:
            pass

    def container_exists(self, container: str) -> bool:
        return bool(self.service.get_container_client(container).exists())

    def container_listable(self, container: str) -> bool:
        """Whether ``container`` can be listed (what a container-scoped SAS allows, unlike ``exists``)."""
        try:
            next(iter(self.service.get_container_client(container).list_blob_names(results_per_page=1)), None)
        except ResourceNotFoundError:
            return False
        return True

    def list_names(self, container: str, prefix: str = "") -> Iterator[str]:
        """Blob names under ``prefix`` in lexicographic order, paged lazily (``adapters.listing``)."""
        client = self.service.get_container_client(container)
        try:
            for page in listing.iter_pages(client, prefix or None):
                yield from (blob.name for blob in page.blobs)
        except ResourceNotFoundError:
            raise self._container_not_found(container) from None

    def list_level(self, container: str, prefix: str, max_items: int, page_size: int = 5000,
                   etags: dict[str, str] | None = None,
                   sizes: dict[str, int] | None = None,
                   max_prefixes: int | None = None) -> tuple[list[str], list[str], bool]:
        """One level of the virtual folders under ``prefix`` (delimiter ``/``): the folder prefixes and the blob names
        found there, in pages, stopping after the page that reaches ``max_items``. Returns ``(prefixes, names,
        complete)``; ``complete`` False means the level has more (the plan then lists that folder flat instead).
        Order is restored by ``core.shards.merge_level`` (prefixes and blobs come back as two lists per page).
        ``etags``, when given, receives each blob's ETag by name (``only_new`` compares them across generations),
        ``sizes`` each blob's size (``core.notimages`` tells folder markers from files by it). ``max_prefixes``: folder
        prefixes count apart from blob names, up to that many (a level of many folders lists in a few pages, where
        one of as many blobs is the whole container); None: both count towards ``max_items``."""
        client = self.service.get_container_client(container)
        prefixes: list[str] = []
        names: list[str] = []
        try:
            for page in listing.iter_pages(client, prefix or None, page_size, delimiter="/"):
                prefixes.extend(page.prefixes)
                for blob in page.blobs:
                    names.append(blob.name)
                    if etags is not None and blob.etag:
                        etags[blob.name] = blob.etag
                    if sizes is not None:
                        sizes[blob.name] = blob.size
                full = (len(prefixes) + len(names) >= max_items if max_prefixes is None
                        else len(names) >= max_items or len(prefixes) >= max_prefixes)
                if full and page.next_marker is not None:
                    return prefixes, names, False
        except ResourceNotFoundError:
            raise self._container_not_found(container) from None
        return prefixes, names, True

    def iter_level_pages(self, container: str, prefix: str, page_size: int = 5000) -> Iterator[listing.ListedPage]:
        """The pages of one level under ``prefix`` (delimiter ``/``: the blobs whose names have no ``/`` after it,
        and the folder prefixes), lazily, each blob with its ETag (unquoted, as ``etag_or_none`` gives it)."""
        try:
            yield from listing.iter_pages(self.service.get_container_client(container), prefix or None, page_size,
                                          delimiter="/")
        except ResourceNotFoundError:
            raise self._container_not_found(container) from None

    def list_names_page(self, container: str, prefix: str, marker: str | None,
                        page_size: int = 5000) -> tuple[list[str], str | None]:
        """One page (up to 5,000, the service's maximum) of the blob names under ``prefix`` from the continuation
        ``marker`` (None: the start), and the marker of the next page (None: no more). Markers are the service's
        opaque ``NextMarker`` strings, small enough to travel through an orchestration."""
        blobs, marker = self.list_blobs_page(container, prefix, marker, page_size)
        return [blob.name for blob in blobs], marker

    def list_blobs_page(self, container: str, prefix: str, marker: str | None,
                        page_size: int = 5000) -> tuple[list[listing.ListedBlob], str | None]:
        """``list_names_page`` with each blob's ETag and size: ``([(name, etag, size), ...], next marker)``. The
        listing returns them with the name at no extra cost; a re-run with ``only_new`` reuses results of images
        whose name and ETag are unchanged (``activities.reuse``). Parsed by ``adapters.listing`` (a fraction of the
        SDK's ``list_blobs`` CPU; ``bench/listing.py``)."""
        try:
            page = listing.list_page(self.service.get_container_client(container), prefix or None, marker or None,
                                     page_size)
        except ResourceNotFoundError:
            raise self._container_not_found(container) from None
        return page.blobs, page.next_marker

    def list_etags(self, container: str, prefix: str) -> dict[str, str]:
        """Every blob under ``prefix`` with its ETag (unquoted), in one paged listing: what the shard readers compare
        coverage summaries against (``activities.shard_results``) at the cost of the listing they make anyway."""
        client = self.service.get_container_client(container)
        try:
            return {b.name: _etag(b.etag) for page in listing.iter_pages(client, prefix or None) for b in page.blobs}
        except ResourceNotFoundError:
            raise self._container_not_found(container) from None

    def etag_or_none(self, container: str, name: str) -> str | None:
        """The blob's ETag (one HEAD request), None when it does not exist."""
        try:
            return _etag(self.service.get_blob_client(container, name).get_blob_properties().etag)
        except ResourceNotFoundError:
            return None

    def _container_not_found(self, container: str) -> ContainerNotFound:
        return ContainerNotFound(
            f"container {container!r} not found in storage account {self.account!r}",
            "check the container name in the task request, or create the container and upload the images",
        )

    def read_bytes(self, container: str, name: str) -> bytes:
        """The blob's content (one Get Blob, ``adapters.blob_requests``); ``ResourceNotFoundError`` if absent."""
        return blob_requests.get_blob(self.service.get_blob_client(container, name))

    def read_json(self, container: str, name: str) -> Any:
        return json.loads(self.read_bytes(container, name))

    def read_json_or_none(self, container: str, name: str) -> Any:
        try:
            return self.read_json(container, name)
        except ResourceNotFoundError:
            return None

    def read_bytes_or_none(self, container: str, name: str) -> bytes | None:
        try:
            return self.read_bytes(container, name)
        except ResourceNotFoundError:
            return None

    def read_head_or_none(self, container: str, name: str, max_bytes: int) -> tuple[bytes, int] | None:
        """(the first ``max_bytes`` of the blob, its whole size) in one ranged Get Blob (``blob_requests.get_head``);
        None if absent. For a blob of any size that need not be read whole (one callers can write)."""
        try:
            return blob_requests.get_head(self.service.get_blob_client(container, name), max_bytes)
        except ResourceNotFoundError:
            return None

    def read_version_or_none(self, container: str, name: str, max_bytes: int) -> tuple[bytes | None, int, str] | None:
        """(content, size, ETag) of the blob as it is now, the content read only if it has at most ``max_bytes``
        (else None, unread) and only if it is still that ETag's (Get Blob with ``If-Match``). None: no such blob, or
        replaced between the two requests (its new version is another one: a trigger handles that one by its own
        event). Why: a trigger that must act once per blob version needs the version of the bytes it acts on."""
        client = self.service.get_blob_client(container, name)
        try:
            props = client.get_blob_properties()
            size, etag = int(props.size or 0), str(props.etag)
            if size > max_bytes:
                return None, size, _etag(etag)
            data = client.download_blob(etag=etag, match_condition=MatchConditions.IfNotModified).readall()
        except (ResourceNotFoundError, ResourceModifiedError):
            return None
        return data, size, _etag(etag)

    def write_bytes(self, container: str, name: str, data: bytes, content_type: str | None = None,
                    cache_control: str | None = None) -> str:
        """Write (replace) the blob; returns its new ETag, as Put Blob returns it (a coverage summary names the
        results it describes by it: ``gpu_batch.manifest``). ``cache_control``: the blob's Cache-Control."""
        client = self.service.get_blob_client(container, name)
        if len(data) <= blob_requests.PUT_LIMIT:  # one Put Blob at about half the SDK's CPU (adapters.blob_requests)
            return _etag(blob_requests.put_blob(client, data, content_type, cache_control))
        return _etag(self._write_blocks(container, name, io.BytesIO(data), content_type, cache_control))

    def create_bytes(self, container: str, name: str, data: bytes) -> bool:
        """Write ``data`` only if the blob does not exist yet; False when it already did (the first writer wins)."""
        try:
            self.service.get_blob_client(container, name).upload_blob(data, overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def read_json_version_or_none(self, container: str, name: str) -> tuple[Any, str] | None:
        """(the blob's JSON, the ETag of the version read), from one Get Blob (the SDK's ``download_blob``: its
        response carries both, so they are of the same version); None when there is no such blob. What a
        read-modify-write conditions its write on (``update_json``)."""
        try:
            downloader = self.service.get_blob_client(container, name).download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return None
        return json.loads(data), str(downloader.properties.etag)

    def write_json_if(self, container: str, name: str, value: Any, etag: str | None) -> bool:
        """Write ``value`` as JSON (as ``write_json`` does) only if the blob is still the version ``etag`` names, or,
        for None, only where there is no blob yet; False when another write came first (nothing written).

        The conditions are Put Blob's (the SDK's ``upload_blob``), "Specifying conditional headers for Blob service
        operations" (learn.microsoft.com): ``If-Match: <etag>``, "perform the operation only if the resource's ETag
        matches"; ``If-None-Match: *``, "only if the resource does not exist". An unmet condition on a write is 412
        Precondition Failed (``ConditionNotMet``: the SDK's ``ResourceModifiedError``); for ``If-None-Match: *`` the
        service answers 409 ``BlobAlreadyExists`` ("Blob service error codes"), which the SDK raises as
        ``ResourceExistsError``, a 412 too (azure-storage-blob ``_upload_helpers._convert_mod_error``). A blob deleted
        since ``etag`` was read fails ``If-Match`` as well (412, or 404: both read as "changed")."""
        data = json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")
        client = self.service.get_blob_client(container, name)
        content = ContentSettings(content_type="application/json")
        try:
            if etag is None:
                client.upload_blob(data, overwrite=False, content_settings=content)
            else:
                try:
                    client.upload_blob(data, overwrite=True, content_settings=content, etag=etag,
                                       match_condition=MatchConditions.IfNotModified)
                except ResourceNotFoundError:  # deleted since it was read
                    return False
        except (ResourceExistsError, ResourceModifiedError):
            return False
        return True

    def update_json(self, container: str, name: str, change: Callable[[Any], Any], attempts: int = 5) -> Any:
        """Read-modify-write of a small JSON blob that others write too, without writing over what they wrote
        meanwhile: ``change`` gets the blob's value (None: no blob) and returns the value to write, or None to leave
        the blob as it is; the write is conditional on the version read (``write_json_if``), and a write that came
        first makes it read and decide again. Returns what the blob holds as far as this call knows: the value it
        wrote, or the one ``change`` kept. ``StorageConflict`` after ``attempts`` reads each overtaken by a write
        (only writers that never stop would do that)."""
        for _ in range(attempts):
            found = self.read_json_version_or_none(container, name)
            current, etag = found if found is not None else (None, None)
            new = change(current)
            if new is None:
                return current
            if self.write_json_if(container, name, new, etag):
                return new
        raise StorageConflict(f"{container}/{name} was changed by another writer at each of {attempts} attempts",
                              "retry the request")

    def upload_file(self, container: str, name: str, data: IO[bytes], content_type: str | None = None) -> None:
        """Upload a (temporary) file from where it stands to its end: how the merge writes results too large to hold
        in memory (in blocks where large: ``_write_blocks``). Up to ``blob_requests.PUT_LIMIT`` bytes it is one Put
        Blob as ``write_bytes`` sends it (the exports' and merge parts' files at small tasks, about half the CPU)."""
        client = self.service.get_blob_client(container, name)
        size: int | None = None
        if data.seekable():
            start = data.tell()
            size = data.seek(0, io.SEEK_END) - start
            data.seek(start)
            if size <= blob_requests.PUT_LIMIT:
                blob_requests.put_blob(client, data.read(), content_type)
                return
        self._write_blocks(container, name, data, content_type)

    def _write_blocks(self, container: str, name: str, data: IO[bytes], content_type: str | None,
                      cache_control: str | None = None) -> str:
        """``data`` from where it stands to its end as staged blocks and one commit; returns the ETag. Through
        ``BlockBlobWriter``, not the SDK's chunked ``upload_blob``: every writer of a name must stage block ids of
        one length (``adapters.block_writer.block_id``)."""
        from adapters.block_writer import BLOCK_BYTES, BlockBlobWriter  # it imports this module

        with BlockBlobWriter(self, container, name, content_type, cache_control=cache_control) as out:
            while chunk := data.read(BLOCK_BYTES):
                out.write(chunk)
        return out.etag

    def size_or_none(self, container: str, name: str) -> int | None:
        try:
            return int(self.service.get_blob_client(container, name).get_blob_properties().size)
        except ResourceNotFoundError:
            return None

    def write_json(self, container: str, name: str, value: Any) -> str:
        """``write_bytes`` of ``value`` as JSON; returns the new ETag."""
        data = json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")
        return self.write_bytes(container, name, data, "application/json")

    def write_compact_json(self, container: str, name: str, value: Any) -> str:
        """``write_bytes`` of ``value`` as compact JSON (``gpu_batch.formats.jsonio``, orjson), for the documents
        that hold a shard's or a list part's names and entries: ``write_json``'s indented standard-library JSON was
        a large share of those activities' CPU per image. Returns the new ETag."""
        from gpu_batch.formats import jsonio

        return self.write_bytes(container, name, jsonio.dumps(value), "application/json")

    def delete_if_exists(self, container: str, name: str) -> bool:
        """Delete the blob; False when there was none."""
        try:
            self.service.get_blob_client(container, name).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    def exists(self, container: str, name: str) -> bool:
        return bool(self.service.get_blob_client(container, name).exists())

    def url(self, container: str, name: str) -> str:
        """The blob's URL without any SAS (callers use their own credentials): the SDK's, encoded as it encodes a
        name, less its query. Why less: the SDK writes a connection string's SharedAccessSignature into it (see
        ``endpoint``), and this URL goes into a task's status answer (``api.starters``, the results' ``url``)."""
        return urlunsplit(urlsplit(str(self.service.get_blob_client(container, name).url))._replace(query=""))


def _etag(value: Any) -> str:
    """An ETag as one string whichever call returned it: blob properties quote it (``"0x8D..."``, as the HTTP header
    does), listings do not."""
    return str(value or "").strip('"')


@functools.cache
def blob_store(connection: str) -> BlobStore:
    """One client per process and connection string (an identity connection's credential: the app's shared one),
    sending through the process's shared session (``adapters.transport.shared_session_options``): the activities of
    a process use this one client from many threads at once (composing with 8, previews with 8), and a session of its
    own kept requests' 10 connections, closing each one returned past them."""
    return BlobStore(service_client(connection, shared_session_options()))


def deadline_blob_store(connection: str, deadline: Deadline) -> BlobStore:
    """A client of its own whose every call ends by ``deadline`` (``storage_refs.deadline_storage_options``: short
    timeouts and back-offs, none past it; a call cut short raises the SDK's error, which callers class busy).

    Not cached and not ``blob_store``'s shared one: the deadline is one caller's (an Event Grid delivery,
    ``api.arrivals``), and the activities sharing that client keep the SDK's patience. An identity connection's
    credential is the app's shared one, though (``service_client``'s default, ``adapters.identity.app_credential``):
    a credential of its own fetched a token on every delivery (2-3 per delivery, a request no deadline bounds) and
    held its sockets until a cyclic garbage collection; the shared one caches its token. And so are its
    connections: it sends through the process's shared session (``adapters.transport.shared_session_options``; the
    deadline bounds each request, not the session), where a session of its own kept each delivery's socket open
    until such a collection too."""
    return BlobStore(service_client(connection, deadline_storage_options(
        deadline.left, try_timeouts=deadline.try_timeouts, **shared_session_options())))
