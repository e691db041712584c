"""`trapbatch results` against Azurite: a download run again after a failure part-way fetches only what is missing
or has changed since (a ten-million-image task's results and COCO file are gigabytes); a symbolic link planted in the
folder is never written through."""
from __future__ import annotations

import json
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


def test_another_tasks_file_at_the_same_path_is_not_taken_for_this_tasks(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """Tasks A and B downloaded into one folder (``--out site-a``, month after month), then A again: the record was
    by blob (A's ETag still there), so B's detections.json, of the same size, was kept and printed ``unchanged`` as
    A's. Fails without recording by path."""
    store.ensure_container(unique_name)
    answers = {}
    for task, body in (("task-a", b'{"a": 1}'), ("task-b", b'{"b": 2}')):
        store.write_bytes(unique_name, f"results/{task}/detections.json", body)
        answers[task] = {"results": {"container": unique_name, "blob": f"results/{task}/detections.json"}}
    service = service_client(storage_connection)
    download(service, answers["task-a"], {}, tmp_path)
    download(service, answers["task-b"], {}, tmp_path)
    assert (tmp_path / "detections.json").read_bytes() == b'{"b": 2}'
    again = download(service, answers["task-a"], {}, tmp_path)
    assert [f.written for f in again] == [True]
    assert (tmp_path / "detections.json").read_bytes() == b'{"a": 1}'
    assert [f.written for f in download(service, answers["task-a"], {}, tmp_path)] == [False]


class Interrupting:
    """The real client, whose downloads stop (Ctrl-C) after ``reads`` reads, recording each download's offset and
    length (``ranges``) and the bytes it returned (``received``)."""

    def __init__(self, service: Any, reads: int | None) -> None:
        self.service, self.reads, self.ranges, self.received = service, reads, [], 0  # type: ignore[var-annotated]

    @property
    def offsets(self) -> list[int | None]:
        return [offset for offset, _ in self.ranges]

    def get_blob_client(self, container: str, name: str) -> Any:
        client, outer = self.service.get_blob_client(container, name), self

        class Blob:
            def get_blob_properties(self) -> Any:
                return client.get_blob_properties()

            def download_blob(self, **kw: Any) -> Any:
                outer.ranges.append((kw.get("offset"), kw.get("length")))
                real = client.download_blob(**kw)
                left = outer.reads

                class Down:
                    properties, size = real.properties, real.size

                    def read(self, n: int) -> bytes:
                        nonlocal left
                        if left is not None:
                            if left == 0:
                                raise KeyboardInterrupt
                            left -= 1
                        data = bytes(real.read(n))
                        outer.received += len(data)
                        return data

                    def readall(self) -> bytes:
                        data = bytes(real.readall())
                        outer.received += len(data)
                        return data

                return Down()

        return Blob()


@pytest.mark.parametrize("changed", [False, True])
def test_an_interrupted_large_download_resumes_where_it_stopped(
        changed: bool, store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C (or a network drop past the SDK's retries) 3 windows into a file larger than a window: the next run
    asks only for the rest, unless the blob changed since (then it reads it all). Before, the ``.part`` was deleted
    and gigabytes were read again from byte 0. Fails without the resume."""
    from cli import download as cli_download

    monkeypatch.setattr(cli_download, "WINDOW", 1_000)
    monkeypatch.setattr(cli_download, "CHECK_TAIL", 500)
    store.ensure_container(unique_name)
    name = "results/task-1/detections.json"
    body = bytes(range(256)) * 40  # 10,240 bytes: 11 windows
    store.write_bytes(unique_name, name, body)
    answer = {"results": {"container": unique_name, "blob": name}}
    stopping = Interrupting(service_client(storage_connection), reads=3)
    with pytest.raises(KeyboardInterrupt):
        download(stopping, answer, {}, tmp_path)
    part = tmp_path / "detections.json.part"
    assert part.read_bytes() == body[:3_000] and not (tmp_path / "detections.json").exists()
    if changed:
        body = b"rewritten " * 1_500
        store.write_bytes(unique_name, name, body)
    going = Interrupting(service_client(storage_connection), reads=None)
    said: list[str] = []
    assert [f.written for f in download(going, answer, {}, tmp_path, say=said.append)] == [True]
    if changed:
        assert going.ranges == [(None, None)] and said == []
    else:  # the .part's last 500 bytes checked (tail check), then only the rest: 7,740 bytes, not 10,240
        assert going.ranges == [(2_500, 500), (3_000, None)] and going.received == 500 + 7_240
        assert said == [f"{tmp_path / 'detections.json'}: resumed at 3,000 bytes of 10,240 bytes after checking the "
                        "last 500 bytes"]
    assert (tmp_path / "detections.json").read_bytes() == body and not part.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [FetchedEtags.FILE, "detections.json"]
    assert [f.written for f in download(going, answer, {}, tmp_path)] == [False]


@pytest.mark.parametrize("torn", ["zeros", "stale bytes"])
def test_a_part_whose_tail_never_reached_the_disk_is_not_resumed(
        torn: str, store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A power loss 3 windows into a large file: the ``.part``'s length reached the disk, its last pages did not (they
    read as zeros, or as whatever those disk blocks held before). Resumed from its end, the garbage stayed inside a
    results file that looked complete (right size, renamed); now its tail is compared with the blob's first and the
    file is read again from the start. Fails without the tail check."""
    from cli import download as cli_download

    monkeypatch.setattr(cli_download, "WINDOW", 1_000)
    monkeypatch.setattr(cli_download, "CHECK_TAIL", 500)
    store.ensure_container(unique_name)
    name = "results/task-1/detections.json"
    body = bytes(range(256)) * 40  # 10,240 bytes
    store.write_bytes(unique_name, name, body)
    answer = {"results": {"container": unique_name, "blob": name}}
    with pytest.raises(KeyboardInterrupt):
        download(Interrupting(service_client(storage_connection), reads=3), answer, {}, tmp_path)
    part = tmp_path / "detections.json.part"
    garbage = bytes(300) if torn == "zeros" else b"old disk block " * 20
    part.write_bytes(body[:2_700] + garbage[:300])  # the same 3,000 bytes long: only the last 300 torn
    going = Interrupting(service_client(storage_connection), reads=None)
    said: list[str] = []
    assert [f.written for f in download(going, answer, {}, tmp_path, say=said.append)] == [True]
    assert (tmp_path / "detections.json").read_bytes() == body
    assert going.ranges == [(2_500, 500), (None, None)]
    assert said == [f"{tmp_path / 'detections.json'}: the partial download did not match the results; started over"]


def test_only_the_part_flushed_to_the_disk_is_resumed(store: BlobStore, unique_name: str, storage_connection: str,
                                                      tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A power loss need not take a ``.part``'s last pages: here its bytes 1,000-2,500 read as zeros, its tail is
    good, so the tail check alone resumed at 3,000 and kept the zeros. Now the ``.part`` is flushed to the disk as it
    grows (each window here) and that length recorded first; a resume cuts off whatever lies past it. Fails without
    the recorded length."""
    from cli import download as cli_download

    monkeypatch.setattr(cli_download, "WINDOW", 1_000)
    monkeypatch.setattr(cli_download, "CHECK_TAIL", 500)
    monkeypatch.setattr(cli_download, "CHECKPOINT_S", 0.0)
    store.ensure_container(unique_name)
    name = "results/task-1/detections.json"
    body = bytes(range(256)) * 40  # 10,240 bytes
    store.write_bytes(unique_name, name, body)
    answer = {"results": {"container": unique_name, "blob": name}}
    recorded: list[int] = []  # the durable length the record held as each window was asked for

    class Watching(Interrupting):
        def get_blob_client(self, container: str, blob: str) -> Any:
            real = super().get_blob_client(container, blob)

            class Blob:
                def get_blob_properties(self) -> Any:
                    return real.get_blob_properties()

                def download_blob(self, **kw: Any) -> Any:
                    down = real.download_blob(**kw)

                    class Down:
                        properties, size = down.properties, down.size

                        def read(self, n: int) -> bytes:
                            files = json.loads((tmp_path / FetchedEtags.FILE).read_text())["files"]
                            recorded.append(files["detections.json.part"]["durable"])
                            return down.read(n)

                    return Down()

            return Blob()

    with pytest.raises(KeyboardInterrupt):
        download(Watching(service_client(storage_connection), reads=3), answer, {}, tmp_path)
    assert recorded == [0, 1_000, 2_000, 3_000]  # flushed after each window, the length recorded
    part = tmp_path / "detections.json.part"
    assert part.read_bytes() == body[:3_000]
    # what a power loss after the first window's flush could leave: the length on the disk, not all the pages
    kept = json.loads((tmp_path / FetchedEtags.FILE).read_text())
    kept["files"]["detections.json.part"]["durable"] = 1_000
    (tmp_path / FetchedEtags.FILE).write_text(json.dumps(kept))
    part.write_bytes(body[:1_000] + bytes(1_500) + body[2_500:3_000])
    going = Interrupting(service_client(storage_connection), reads=None)
    said: list[str] = []
    assert [f.written for f in download(going, answer, {}, tmp_path, say=said.append)] == [True]
    assert (tmp_path / "detections.json").read_bytes() == body
    assert going.ranges == [(500, 500), (1_000, None)]
    assert said == [f"{tmp_path / 'detections.json'}: resumed at 1,000 bytes of 10,240 bytes after checking the last "
                    "500 bytes; the 2,000 bytes after it, not yet flushed to the disk when the download stopped, are "
                    "read again"]


def test_a_file_is_on_the_disk_before_it_is_renamed_and_recorded(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A file renamed and recorded (its ETag in ``.trapbatch-downloads.json``) whose bytes a power loss then took
    read as ``unchanged`` from then on: its size is the blob's. Its ``.part`` is flushed (fsync) whole before the
    rename; so is the downloads record before its own rename. Fails without either flush."""
    import os

    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-1/detections.json", b"x" * 5_000)
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json"}}
    flushed: list[tuple[str, int]] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        flushed.append((os.path.basename(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd).st_size))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    download(service_client(storage_connection), answer, {}, tmp_path)
    # the file, then the downloads record that names it (renamed unflushed, a power loss could leave it empty)
    assert flushed[0] == ("detections.json.part", 5_000)
    assert flushed[1:] and {name for name, _ in flushed[1:]} == {".trapbatch-downloads.json.part"}
    assert all(size > 0 for _, size in flushed[1:])
    assert (tmp_path / "detections.json").read_bytes() == b"x" * 5_000


def test_a_resumed_file_that_does_not_match_its_content_md5_is_read_again(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``.part`` recorded by an older CLI (no flushed length) whose middle a power loss left as zeros passes the
    tail check; where the blob carries a Content-MD5 (a Put Blob: Azure computes it, as Azurite does) the finished
    file is checked against it and, not matching, read again from the start. Fails without the MD5 check."""
    from cli import download as cli_download

    monkeypatch.setattr(cli_download, "WINDOW", 1_000)
    monkeypatch.setattr(cli_download, "CHECK_TAIL", 500)
    store.ensure_container(unique_name)
    name = "results/task-1/detections.json"
    body = bytes(range(256)) * 40  # 10,240 bytes, one Put Blob: it has a Content-MD5
    store.write_bytes(unique_name, name, body)
    assert service_client(storage_connection).get_blob_client(
        unique_name, name).get_blob_properties().content_settings.content_md5
    answer = {"results": {"container": unique_name, "blob": name}}
    with pytest.raises(KeyboardInterrupt):
        download(Interrupting(service_client(storage_connection), reads=3), answer, {}, tmp_path)
    kept = json.loads((tmp_path / FetchedEtags.FILE).read_text())
    del kept["files"]["detections.json.part"]["durable"]  # as an older CLI recorded it
    (tmp_path / FetchedEtags.FILE).write_text(json.dumps(kept))
    (tmp_path / "detections.json.part").write_bytes(body[:1_000] + bytes(1_500) + body[2_500:3_000])
    going = Interrupting(service_client(storage_connection), reads=None)
    said: list[str] = []
    assert [f.written for f in download(going, answer, {}, tmp_path, say=said.append)] == [True]
    assert (tmp_path / "detections.json").read_bytes() == body
    assert going.ranges == [(2_500, 500), (3_000, None), (None, None)]  # the tail passed; the MD5 did not
    assert said == [f"{tmp_path / 'detections.json'}: resumed at 3,000 bytes of 10,240 bytes after checking the last "
                    "500 bytes",
                    f"{tmp_path / 'detections.json'}: the partial download did not match the results; started over"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [FetchedEtags.FILE, "detections.json"]


def test_a_file_that_does_not_match_its_content_md5_is_an_error(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """A blob whose Content-MD5 property is not its content's MD5 (set so by whoever wrote it, or the bytes changed
    on the way): the download is refused with what to do, and no file is left that looks complete."""
    from azure.storage.blob import ContentSettings

    store.ensure_container(unique_name)
    name = "results/task-1/detections.json"
    store.write_bytes(unique_name, name, b"x" * 5_000)
    service_client(storage_connection).get_blob_client(unique_name, name).set_http_headers(
        ContentSettings(content_md5=bytearray(16)))
    answer = {"results": {"container": unique_name, "blob": name}}
    with pytest.raises(CliError) as failed:
        download(service_client(storage_connection), answer, {}, tmp_path)
    assert "does not match the blob's Content-MD5" in failed.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == [FetchedEtags.FILE]


def test_a_small_files_interrupted_download_leaves_no_part(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-1/detections.json", b"x" * 5_000)
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json"}}
    with pytest.raises(KeyboardInterrupt):
        download(Interrupting(service_client(storage_connection), reads=0), answer, {}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FetchedEtags.FILE]


def test_a_folder_recorded_by_an_older_cli_is_not_fetched_again(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """``.trapbatch-downloads.json`` of the first format (blob -> ETag): its files count as fetched, once."""
    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-1/detections.json", b"{}")
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.json"}}
    service = CountingService(service_client(storage_connection))
    download(service, answer, {}, tmp_path)
    etag = str(service_client(storage_connection).get_blob_client(
        unique_name, "results/task-1/detections.json").get_blob_properties().etag)
    (tmp_path / FetchedEtags.FILE).write_text(json.dumps({f"{unique_name}/results/task-1/detections.json": etag}))
    service.downloaded.clear()
    assert [f.written for f in download(service, answer, {}, tmp_path)] == [False] and service.downloaded == []
    assert json.loads((tmp_path / FetchedEtags.FILE).read_text())["version"] == 2
    assert [f.written for f in download(service, answer, {}, tmp_path)] == [False] and service.downloaded == []


def test_a_file_another_program_holds_says_to_close_it(store: BlobStore, unique_name: str, storage_connection: str,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows a CSV open in Excel cannot be replaced (PermissionError at the rename): the hint said to free space
    or choose another folder; it says to close the program that holds the file."""
    import os

    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-1/detections.csv", b"file\n")
    answer = {"results": {"container": unique_name, "blob": "results/task-1/detections.csv"}}
    real_replace = os.replace

    def held(src: Any, dst: Any) -> None:
        if str(dst).endswith("detections.csv"):
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", held)
    with pytest.raises(CliError) as refused:
        download(service_client(storage_connection), answer, {}, tmp_path)
    assert "close the program that has the file open" in refused.value.hint


def test_files_an_earlier_download_left_in_the_folder_are_named(store: BlobStore, unique_name: str,
                                                                storage_connection: str, tmp_path: Path) -> None:
    """Task A (with exports) then task B (without) into one folder: A's exports stayed among B's files without a
    word; ``results`` now names them (``earlier_files``), and not once B's own files are all there is."""
    from cli.download import earlier_files

    store.ensure_container(unique_name)
    store.write_bytes(unique_name, "results/task-a/detections.json", b'{"a": 1}')
    store.write_bytes(unique_name, "results/task-a/exports/coco.json", b"{}")
    store.write_bytes(unique_name, "results/task-b/detections.json", b'{"b": 2}')
    a = {"results": {"container": unique_name, "blob": "results/task-a/detections.json",
                     "exports": {"original": {"coco.json": "results/task-a/exports/coco.json"}}}}
    b = {"results": {"container": unique_name, "blob": "results/task-b/detections.json"}}
    service = service_client(storage_connection)
    download(service, a, {}, tmp_path)
    files = download(service, b, {}, tmp_path)
    assert earlier_files(tmp_path, files) == ["exports/coco.json"]
    (tmp_path / "exports" / "coco.json").unlink()
    assert earlier_files(tmp_path, files) == []  # gone: nothing to say


def test_another_tasks_preview_pages_left_in_the_folder_are_named_the_tasks_own_are_not(tmp_path: Path) -> None:
    """Task A downloaded with --previews, then task B into the same folder without: B's results sat beside A's
    preview page, and the list of files from an earlier download left every page out. A's own pages, left by a
    download of A without --previews, are still not named."""
    from cli.download import FetchedEtags, earlier_files

    record = FetchedEtags(tmp_path)
    for name in ("index.html", "thumbs/1.jpg"):
        (tmp_path / "previews" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "previews" / name).write_text("page")
        record.record(tmp_path / "previews" / name, f"$web/task-aaaa-0123abcd/{name}", '"0x1"')
    record.save()
    assert earlier_files(tmp_path, [], pages_of="task-bbbb") == ["previews/index.html", "previews/thumbs/1.jpg"]
    assert earlier_files(tmp_path, [], pages_of="task-aaaa") == []
    assert earlier_files(tmp_path, []) == ["previews/index.html", "previews/thumbs/1.jpg"]  # --previews: not now
