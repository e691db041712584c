"""`trapbatch results` against Azurite: a download run again after a failure part-way fetches only what is missing
or has changed since (a ten-million-image task's results and COCO file are gigabytes); a symbolic link planted in the
folder is never written through."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from adapters.blobs import BlobStore, service_client
from cli.download import FetchedEtags, download
from cli.errors import CliError
from tests.links import plant_link


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
    assert all(f.written for f in download(service, answer, {}, tmp_path))
    assert sorted(service.downloaded) == sorted(files)
    assert (tmp_path / "exports" / "coco.json").read_bytes() == b"{}" and (tmp_path / FetchedEtags.FILE).is_file()

    service.downloaded.clear()
    store.write_bytes(unique_name, "results/task-1/exports/coco.json", b'{"changed": 1}')  # changed since
    (tmp_path / "detections.csv").unlink()  # lost locally
    again = download(service, answer, {}, tmp_path)
    assert sorted(service.downloaded) == ["results/task-1/detections.csv", "results/task-1/exports/coco.json"]
    assert [(f.path.relative_to(tmp_path).as_posix(), f.written) for f in again] == [  # what `results` prints
        ("detections.json", False), ("detections.csv", True), ("exports/coco.json", True)]
    assert (tmp_path / "exports" / "coco.json").read_bytes() == b'{"changed": 1}'
    assert (tmp_path / "detections.csv").read_bytes() == b"file\n"

    service.downloaded.clear()
    (tmp_path / "detections.json").write_bytes(b"edited by hand!")  # another size: fetched again
    download(service, answer, {}, tmp_path)
    assert service.downloaded == ["results/task-1/detections.json"]


@pytest.mark.parametrize("planted", ["detections.json.part", "detections.json", FetchedEtags.FILE + ".part"])
def test_a_link_planted_at_a_name_the_download_writes_is_not_written_through(
        planted: str, store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """``out/detections.json.part -> ../outside.txt``: the download wrote the blob into the file outside the folder
    (and renamed the link into place). The link is replaced, the file it points to left as it was, and the download
    succeeds."""
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-1/detections.json", b'{"images": []}')
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json"}}
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not the CLI's")
    out = tmp_path / "out"
    plant_link(out / planted, Path("..") / "outside.txt")
    download(service_client(storage_connection), answer, {}, out)
    assert outside.read_bytes() == b"not the CLI's"
    got = out / "detections.json"
    assert not got.is_symlink() and got.read_bytes() == b'{"images": []}'
    assert not (out / FetchedEtags.FILE).is_symlink() and sorted(p.name for p in out.iterdir()) == [
        FetchedEtags.FILE, "detections.json"]


@pytest.mark.parametrize("linked", ["exports", "previews"])
def test_a_linked_folder_that_leads_out_of_the_folder_is_refused_with_what_to_do(
        linked: str, store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """``out/exports -> ../elsewhere``: the rename put the file there; ``out/previews`` was not checked at all (the
    preview pages' names were checked against the linked folder itself)."""
    store.ensure_container(unique_name)
    for name in ("results/task-1/detections.json", "results/task-1/exports/coco.json", "previews/task-1/index.html"):
        store.write_bytes(unique_name, name, b"{}")
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json",
                          "exports": {"original": {"coco.json": "results/task-1/exports/coco.json"}}},
              "previews": {"container": unique_name, "folder": "previews/task-1"}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    plant_link(out / linked, Path("..") / "elsewhere")
    with pytest.raises(CliError) as refused:
        download(service_client(storage_connection), answer, {}, out, previews=True)
    assert "symbolic link" in refused.value.message and "remove the link" in refused.value.hint
    assert list(elsewhere.iterdir()) == []
