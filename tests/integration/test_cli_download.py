"""`trapbatch results` against Azurite: a download run again after a failure part-way fetches only what is missing
or has changed since (a ten-million-image task's results and COCO file are gigabytes)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from adapters.blobs import BlobStore, service_client
from cli.download import FetchedEtags, download


class CountingService:
    """The real client, counting the blobs whose content is downloaded."""

    def __init__(self, service: Any) -> None:
        self.service, self.downloaded = service, []  # type: ignore[var-annotated]

    def get_blob_client(self, container: str, name: str) -> Any:
        client = self.service.get_blob_client(container, name)
        counted = self.downloaded

        class Blob:
            def get_blob_properties(self) -> Any:
                return client.get_blob_properties()

            def download_blob(self, **kw: Any) -> Any:
                counted.append(name)
                return client.download_blob(**kw)

        return Blob()


def test_a_download_run_again_fetches_only_what_is_missing_or_changed(store: BlobStore, unique_name: str,
                                                                      storage_connection: str, tmp_path: Path) -> None:
    store.ensure_container(unique_name)
    files = {"results/task-1/detections.json": b'{"images": []}', "results/task-1/detections.csv": b"file\n",
             "results/task-1/exports/coco.json": b"{}"}
    for name, data in files.items():
        store.write_bytes(unique_name, name, data)
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json",
                          "csv": "results/task-1/detections.csv",
                          "exports": {"original": {"coco.json": "results/task-1/exports/coco.json"}}}}
    service = CountingService(service_client(storage_connection))
    download(service, answer, {}, tmp_path)
    assert sorted(service.downloaded) == sorted(files)
    assert (tmp_path / "exports" / "coco.json").read_bytes() == b"{}" and (tmp_path / FetchedEtags.FILE).is_file()

    service.downloaded.clear()
    store.write_bytes(unique_name, "results/task-1/exports/coco.json", b'{"changed": 1}')  # changed since
    (tmp_path / "detections.csv").unlink()  # lost locally
    download(service, answer, {}, tmp_path)
    assert sorted(service.downloaded) == ["results/task-1/detections.csv", "results/task-1/exports/coco.json"]
    assert (tmp_path / "exports" / "coco.json").read_bytes() == b'{"changed": 1}'
    assert (tmp_path / "detections.csv").read_bytes() == b"file\n"

    service.downloaded.clear()
    (tmp_path / "detections.json").write_bytes(b"edited by hand!")  # another size: fetched again
    download(service, answer, {}, tmp_path)
    assert service.downloaded == ["results/task-1/detections.json"]
