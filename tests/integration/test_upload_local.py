"""scripts/upload_local.py: photos into a local container with their folders kept, and only what is missing again."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

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


def test_the_start_on_arrival_marker_goes_up_last_and_the_advice_says_it_starts_the_task(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A photo folder holding trapbatch-ready.json went up in parallel, the marker among the photos: landing before
    some of them, it started a task over part of the folder (README: write it last); and the last line advised
    submitting the container, a second way to start the same task."""
    for i in range(40):
        (tmp_path / f"z{i:02d}.jpg").write_bytes(b"\xff\xd8" + bytes([i]))
    (tmp_path / "trapbatch-ready.json").write_text("{}")
    sent = _spy_uploads(monkeypatch)
    assert upload_local.main([unique_name, str(tmp_path), "--connection", storage_connection]) == 0
    assert len(sent) == 41 and sent[-1] == "trapbatch-ready.json"
    last = capsys.readouterr().out.splitlines()[-1]
    assert "trapbatch submit" not in last and "trapbatch-ready.task.json" in last


def test_a_file_corrected_in_place_with_the_same_size_goes_up_again(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path) -> None:
    """An image list fixed in place (NOPE.JPG -> IMG1.JPG keeps its size) was skipped as "already there", and the
    task ran the old list; a file changed on disk after its upload goes up again, one left alone does not."""
    import os
    import time

    (tmp_path / "list.csv").write_text("path\ncam/NOPE.JPG\n")
    (tmp_path / "IMG.JPG").write_bytes(b"\xff\xd8one")
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (2, 0)
    (tmp_path / "list.csv").write_text("path\ncam/IMG1.JPG\n")
    later = time.time() + 5  # after the blob's time, whatever the clocks' resolution
    os.utime(tmp_path / "list.csv", (later, later))
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (1, 1)
    assert store.read_bytes(unique_name, "list.csv") == b"path\ncam/IMG1.JPG\n"


def test_a_file_is_judged_changed_by_its_own_time_not_the_clocks_of_the_upload(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path) -> None:
    """A file was "changed" when its mtime was past the blob's Last-Modified. Photos copied from a card keep the
    camera's times, which are often ahead (a clock set wrong, a card's local time read as UTC): every such photo went
    up again at every run, so a rerun after an interruption sent the whole folder again. And a file replaced by
    another of the same size with an older time (``cp -p``, an unzipped correction) was skipped. The file's time at
    its upload is kept with the blob, and a file is up to date when that time is its time now."""
    import os
    import time

    ahead = tmp_path / "IMG_0001.JPG"
    ahead.write_bytes(b"\xff\xd8one")
    future = time.time() + 86400  # a camera clock a day ahead
    os.utime(ahead, (future, future))
    older = tmp_path / "list.csv"
    older.write_text("path\ncam/NOPE.JPG\n")
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (2, 0)
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (0, 2)  # nothing changed
    past = time.time() - 86400  # the corrected list, unpacked with its older time
    older.write_text("path\ncam/IMG1.JPG\n")
    os.utime(older, (past, past))
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (1, 1)
    assert store.read_bytes(unique_name, "list.csv") == b"path\ncam/IMG1.JPG\n"


def test_photos_added_beside_a_marker_already_there_are_not_said_to_start_a_task(
        storage_connection: str, unique_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The marker went up with the first run and started its task; photos added later went up on the next run, the
    marker, unchanged, did not (and written again with the same content it starts nothing new: README), yet the last
    line still said the marker starts the task: the new photos were left without one."""
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8a")
    (tmp_path / "trapbatch-ready.json").write_text("{}")
    argv = [unique_name, str(tmp_path), "--connection", storage_connection]
    assert upload_local.main(argv) == 0
    assert "trapbatch-ready.task.json" in capsys.readouterr().out.splitlines()[-1]  # it went up: it starts the task
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8b")
    assert upload_local.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("1 files uploaded, 2 already there"), out
    assert "starts the task by itself" not in out[-1] and f"--container {unique_name} --only-new" in out[-1], out


def test_photos_added_beside_a_marker_sent_again_with_the_same_content_are_not_said_to_start_a_task(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The marker's time changed (``touch``, a copy without ``-p``, a FAT card read in another time zone), so it went
    up again, and the last line said it starts the task; but the same content is the same request, hence the same
    task, which its receipt shows started already (README "Start a task when an upload is complete"): the photos
    added beside it were in no task."""
    import os
    import time

    from gpu_batch.layout import ready_receipt_blob

    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8a")
    marker = tmp_path / "trapbatch-ready.json"
    marker.write_text('{"prefix": ""}')
    argv = [unique_name, str(tmp_path), "--connection", storage_connection]
    assert upload_local.main(argv) == 0
    store.write_json(unique_name, ready_receipt_blob(), {"id": "task-0123456789abcdef0123"})  # the app's answer
    capsys.readouterr()
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8b")
    later = time.time() + 60
    os.utime(marker, (later, later))
    assert upload_local.main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].startswith("2 files uploaded, 1 already there"), out
    assert "starts the task by itself" not in out[-1] and f"--container {unique_name} --only-new" in out[-1], out
    # a marker with other content may be another request: it is said to start its task
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8c")
    marker.write_text('{"prefix": "", "model": "MDV5A"}')
    assert upload_local.main(argv) == 0
    assert "starts the task by itself" in capsys.readouterr().out.splitlines()[-1]


def _spy_uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    sent: list[str] = []
    upload = ContainerClient.upload_blob

    def spy(self: ContainerClient, name: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(name)
        return upload(self, name, *args, **kwargs)

    monkeypatch.setattr(ContainerClient, "upload_blob", spy)
    return sent


def _spy_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    file_md5 = getattr(upload_local, "file_md5", None)

    def spy(path: Path) -> bytes:
        hashed.append(path)
        return file_md5(path)  # type: ignore[misc]

    monkeypatch.setattr(upload_local, "file_md5", spy, raising=False)
    return hashed


def _shift(path: Path, seconds: float) -> None:
    import os

    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + int(seconds * 1e9)))


def test_a_file_whose_time_moved_but_not_its_bytes_is_not_sent_again_and_is_read_once(
        storage_connection: str, store: BlobStore, unique_name: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a daylight-saving change a FAT/exFAT card shows every photo an hour off (a copy that resets times, or
    ``touch``, does the same): each went up again, hours over a field station's link. A file of the blob's size whose
    MD5 is the blob's Content-MD5 is skipped, its blob keeps the new time, and the next run reads no file; a file whose
    bytes changed with its size kept goes up."""
    (tmp_path / "cam").mkdir()
    photos = [tmp_path / "cam" / f"IMG_{i:04d}.JPG" for i in range(3)]
    for i, photo in enumerate(photos):
        photo.write_bytes(b"\xff\xd8" + bytes([i]) * 100)
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (3, 0)
    for photo in photos:
        _shift(photo, 3600)  # the hour a daylight-saving change puts on a FAT card's times
    photos[2].write_bytes(b"\xff\xd8" + b"\x07" * 100)  # and one really changed, with its size kept
    sent = _spy_uploads(monkeypatch)
    hashed = _spy_hashes(monkeypatch)
    said: list[str] = []
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path, report=said.append) == (1, 2)
    assert sent == ["cam/IMG_0002.JPG"] and sorted(hashed) == photos
    assert any(line.startswith("2 files had a new time but the blob's bytes") for line in said), said
    assert store.read_bytes(unique_name, "cam/IMG_0002.JPG") == b"\xff\xd8" + b"\x07" * 100
    container = ContainerClient.from_connection_string(storage_connection, unique_name)
    for photo in photos:
        kept = container.get_blob_client("cam/" + photo.name).get_blob_properties().metadata
        assert kept[upload_local.MTIME_METADATA] == str(photo.stat().st_mtime_ns)
    sent.clear()
    hashed.clear()
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (0, 3)
    assert sent == [] and hashed == []  # the new times are kept: nothing read again


def test_a_file_sent_in_blocks_keeps_its_md5_so_a_moved_time_alone_does_not_send_it_again(
        storage_connection: str, unique_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file above the SDK's max_single_put_size goes up as blocks, and Put Block List keeps no Content-MD5 unless
    the client sends one: such a file (a video) went up again whenever its time moved. Every upload sends its MD5.
    A blob that has none (blocks from another tool) is sent again, as before: nothing to compare the file with."""
    import hashlib

    monkeypatch.setattr(upload_local, "SINGLE_PUT_MAX_BYTES", 1024, raising=False)  # so a small file goes up in blocks
    video = tmp_path / "clip.AVI"
    video.write_bytes(bytes(range(256)) * 12)
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (1, 0)
    container = ContainerClient.from_connection_string(storage_connection, unique_name)
    kept = container.get_blob_client("clip.AVI").get_blob_properties().content_settings.content_md5
    assert bytes(kept) == hashlib.md5(video.read_bytes()).digest()
    _shift(video, -3600)
    sent = _spy_uploads(monkeypatch)
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (0, 1) and sent == []
    blob = container.get_blob_client("clip.AVI")  # written in blocks without an MD5, as azcopy does by default
    blob.stage_block("QUFBQQ==", video.read_bytes())
    blob.commit_block_list(["QUFBQQ=="], metadata={upload_local.MTIME_METADATA: "1"})
    assert not blob.get_blob_properties().content_settings.content_md5
    assert upload_local.upload_folder(storage_connection, unique_name, tmp_path) == (1, 0)
