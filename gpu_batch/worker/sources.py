"""Where the worker gets bytes: images from a blob container or a local folder, and the storage client itself.

Why this module exists: the pipeline only needs ``fetch(name) -> bytes``; keeping storage here lets the pipeline be
tested on a folder and lets the blob path use many concurrent downloads (the pipeline calls ``fetch`` from a
thread pool; ``BlobServiceClient`` is thread-safe). Storage configuration comes from the environment:
``TRAPBATCH_STORAGE_CONNECTION`` (a connection string, e.g. Azurite's) or ``TRAPBATCH_STORAGE_ACCOUNT_URL`` with
``DefaultAzureCredential`` (managed identity on Batch nodes).

Must not: decode images or interpret results.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Protocol

CONNECTION_ENV = "TRAPBATCH_STORAGE_CONNECTION"
ACCOUNT_URL_ENV = "TRAPBATCH_STORAGE_ACCOUNT_URL"


class SourceError(Exception):
    """One image could not be read (becomes that image's ``image access failure``)."""


class StorageConfigError(Exception):
    """No usable storage configuration (whole-shard problem)."""


class ImageSource(Protocol):
    def fetch(self, name: str) -> bytes: ...


class LocalFolderSource:
    """Images under a local folder; names are paths relative to it (no escaping the folder)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def fetch(self, name: str) -> bytes:
        path = (self.root / name).resolve()
        if self.root not in path.parents:
            raise SourceError(f"{name!r} is outside the image root")
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {name!r}: {exc}") from exc


def _blob_imports() -> Any:
    try:
        from azure.storage import blob
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise StorageConfigError("azure-storage-blob is not installed; install the worker requirements "
                                 "(pip install -r requirements/worker.txt)") from exc
    return blob


def blob_service_from_env(env: Mapping[str, str] | None = None) -> Any:
    """A ``BlobServiceClient`` from TRAPBATCH_STORAGE_CONNECTION or TRAPBATCH_STORAGE_ACCOUNT_URL."""
    env = os.environ if env is None else env
    blob = _blob_imports()
    connection = env.get(CONNECTION_ENV)
    if connection:
        return blob.BlobServiceClient.from_connection_string(connection, max_single_get_size=64 << 20)
    account_url = env.get(ACCOUNT_URL_ENV)
    if account_url:
        from azure.identity import DefaultAzureCredential

        return blob.BlobServiceClient(account_url, credential=DefaultAzureCredential(), max_single_get_size=64 << 20)
    raise StorageConfigError(f"set {CONNECTION_ENV} (connection string) or {ACCOUNT_URL_ENV} (with a managed "
                             "identity) so the worker can reach blob storage")


class BlobImageSource:
    """Images in one container; ``fetch`` downloads a whole blob (called concurrently by the pipeline)."""

    def __init__(self, service: Any, container: str) -> None:
        self.container = service.get_container_client(container)

    def fetch(self, name: str) -> bytes:
        from azure.core.exceptions import AzureError

        try:
            return bytes(self.container.download_blob(name, max_concurrency=1).readall())
        except AzureError as exc:
            raise SourceError(f"cannot download {name!r}: {type(exc).__name__}") from exc


class BlobSink:
    """A results document in a blob (overwritten on every flush; block blob uploads are atomic)."""

    def __init__(self, service: Any, container: str, name: str) -> None:
        self.client = service.get_blob_client(container, name)
        self.container, self.name = container, name

    def read(self) -> bytes | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return bytes(self.client.download_blob().readall())
        except ResourceNotFoundError:
            return None

    def write(self, data: bytes) -> None:
        from azure.core.exceptions import AzureError

        from gpu_batch.worker.results import OutputNotWritable

        try:
            self.client.upload_blob(data, overwrite=True)
        except AzureError as exc:
            raise OutputNotWritable(f"cannot write results to blob {self.container}/{self.name}: "
                                    f"{type(exc).__name__}: {exc}") from exc

    def describe(self) -> str:
        return f"blob {self.container}/{self.name}"


def download_blob_to(service: Any, container: str, name: str, dest: Path) -> None:
    """Stream one blob to a local file (used for ``blob://`` models)."""
    with dest.open("wb") as f:
        service.get_blob_client(container, name).download_blob(max_concurrency=4).readinto(f)
