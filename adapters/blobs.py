"""The only blob-storage code of the Functions app: a small ``BlobStore`` over azure-storage-blob.

Why a wrapper: activities need a few operations (list, read, write JSON/bytes/files, exists, ensure container), and
no activity should build SDK clients itself (storage errors are mapped in one place: ``adapters.storage_errors``). Clients are built from settings once per process
(``blob_store``), never at import time and never per call. Identity-based connections (``identity:<blob uri>``, from
``AzureWebJobsStorage__accountName``) use a managed identity; nothing here logs a key or SAS.
"""
from __future__ import annotations

import functools
import json
from typing import IO, Any, Iterator

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContentSettings

from core.errors import ContainerNotFound


def service_client(connection: str) -> BlobServiceClient:
    if connection.startswith("identity:"):
        from azure.identity import DefaultAzureCredential

        return BlobServiceClient(connection[len("identity:"):], credential=DefaultAzureCredential())
    return BlobServiceClient.from_connection_string(connection)


class BlobStore:
    def __init__(self, service: BlobServiceClient) -> None:
        self.service = service

    @property
    def account(self) -> str:
        return str(self.service.account_name)

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
        """Blob names under ``prefix`` in lexicographic order, paged lazily."""
        client = self.service.get_container_client(container)
        try:
            for name in client.list_blob_names(name_starts_with=prefix or None):
                yield name
        except ResourceNotFoundError:
            raise ContainerNotFound(
                f"container {container!r} not found in storage account {self.account!r}",
                "check the container name in the task request, or create the container and upload the images",
            ) from None

    def read_bytes(self, container: str, name: str) -> bytes:
        return bytes(self.service.get_blob_client(container, name).download_blob().readall())

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

    def write_bytes(self, container: str, name: str, data: bytes, content_type: str | None = None) -> None:
        settings = ContentSettings(content_type=content_type) if content_type else None
        self.service.get_blob_client(container, name).upload_blob(data, overwrite=True, content_settings=settings)

    def create_bytes(self, container: str, name: str, data: bytes) -> bool:
        """Write ``data`` only if the blob does not exist yet; False when it already did (the first writer wins)."""
        try:
            self.service.get_blob_client(container, name).upload_blob(data, overwrite=False)
        except ResourceExistsError:
            return False
        return True

    def upload_file(self, container: str, name: str, data: IO[bytes], content_type: str | None = None) -> None:
        """Upload a (temporary) file in blocks: how the merge writes results too large to hold in memory."""
        settings = ContentSettings(content_type=content_type) if content_type else None
        self.service.get_blob_client(container, name).upload_blob(data, overwrite=True, content_settings=settings)

    def size_or_none(self, container: str, name: str) -> int | None:
        try:
            return int(self.service.get_blob_client(container, name).get_blob_properties().size)
        except ResourceNotFoundError:
            return None

    def write_json(self, container: str, name: str, value: Any) -> None:
        data = json.dumps(value, indent=1, ensure_ascii=False).encode("utf-8")
        self.write_bytes(container, name, data, "application/json")

    def exists(self, container: str, name: str) -> bool:
        return bool(self.service.get_blob_client(container, name).exists())

    def url(self, container: str, name: str) -> str:
        """The blob's URL without any SAS (callers use their own credentials)."""
        return str(self.service.get_blob_client(container, name).url)


@functools.cache
def blob_store(connection: str) -> BlobStore:
    """One client per process and connection string."""
    return BlobStore(service_client(connection))
