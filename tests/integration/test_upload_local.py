"""scripts/upload_local.py: photos into a local container with their folders kept, and only what is missing again."""
from __future__ import annotations

from pathlib import Path

from adapters.blobs import BlobStore
from scripts import upload_local


def test_a_folder_goes_up_with_its_paths_and_a_second_run_sends_only_what_changed(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path) -> None:
    (tmp_path / "camera-01" / "day 1").mkdir(parents=True)
    (tmp_path / "camera-01" / "day 1" / "IMG_0001.JPG").write_bytes(b"\xff\xd8one")
    (tmp_path / "camera-02").mkdir()
    (tmp_path / "camera-02" / "Zoë.jpg").write_bytes(b"\xff\xd8two")
    argv = [unique_name, str(tmp_path), "--prefix", "2024/a", "--connection", storage_connection]
    assert upload_local.main(argv) == 0
    assert sorted(store.list_names(unique_name, "")) == ["2024/a/camera-01/day 1/IMG_0001.JPG",
                                                         "2024/a/camera-02/Zoë.jpg"]
    (tmp_path / "camera-02" / "Zoë.jpg").write_bytes(b"\xff\xd8changed")
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path, "2024/a/") == (1, 1)
    assert upload_local.main([unique_name, str(tmp_path / "missing"), "--connection", storage_connection]) == 2
