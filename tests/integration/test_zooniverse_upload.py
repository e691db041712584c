"""`trapbatch zooniverse` against Azurite: a manifest's photos land beside it where the Panoptes CLI looks for them
(relative to the manifest's folder), each within the size limit; photos already small are the originals byte for
byte; a missing photo is named, not fatal; a second run fetches nothing again; a symbolic link planted in the folder
is never written through."""
from __future__ import annotations

import csv
import io
import os
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from adapters.blobs import BlobStore, service_client
from cli.zooniverse_upload import PhotoOptions, manifests, prepare
from tests.links import plant_link

LIMIT = 60_000


def _photo(seed: int, size: tuple[int, int]) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95)
    return out.getvalue()


def panoptes_files(manifest: Path, columns: list[int]) -> list[Path]:
    """The files the Panoptes CLI's upload-subjects would open for ``manifest`` with ``-f`` on ``columns`` (its
    ``os.path.join(os.path.dirname(manifest_file), row[field_number - 1])``, empty cells skipped by ``-M``)."""
    with open(manifest, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, skipinitialspace=True))[1:]
    return [Path(os.path.join(os.path.dirname(manifest), row[i])) for row in rows for i in columns if row[i]]


@pytest.fixture
def task(store: BlobStore, unique_name: str) -> dict[str, Any]:
    """A finished task's results answer, its manifest (a captures manifest of two columns) and its photos: one large,
    two small, one named but gone from the images' container."""
    state, images = unique_name + "-state", unique_name + "-cams"
    store.ensure_container(state)
    store.ensure_container(images)
    photos = {"site a/cam 1/big.JPG": _photo(1, (640, 480)), "site a/cam 1/small.JPG": _photo(2, (60, 40)),
              "site a/cam 2/small, too.JPG": _photo(3, (50, 50))}
    for name, data in photos.items():
        store.write_bytes(images, name, data)
    manifest = ("image_name_1,image_name_2,folder,attribution,license,#file\r\n"
                "site a/cam 1/big.JPG,site a/cam 1/small.JPG,site a/cam 1,,,site a/cam 1/big.JPG\r\n"
                "\"site a/cam 2/small, too.JPG\",,site a/cam 2,,,x\r\n"
                "site a/cam 2/gone.JPG,,site a/cam 2,,,site a/cam 2/gone.JPG\r\n")
    blob = "results/task-1/exports/zooniverse/batch-001.csv"
    store.write_bytes(state, blob, manifest.encode("utf-8"))
    answer = {"results": {"container": state, "blob": "results/task-1/detections.json",
                          "files": {"original": {"exports": {"zooniverse/batch-001.csv": blob}}}},
              "source": {"container": images, "account_url": ""}}
    return {"answer": answer, "photos": photos, "images": images}


def test_the_photos_land_where_the_panoptes_cli_reads_them_each_within_the_limit(
        task: dict[str, Any], storage_connection: str, tmp_path: Path) -> None:
    service = service_client(storage_connection)
    assert len(task["photos"]["site a/cam 1/big.JPG"]) > LIMIT
    _, files = manifests(task["answer"], {}, None)
    [report] = prepare(service, service, task["images"], files, tmp_path, PhotoOptions(LIMIT), workers=3)
    assert report.manifest == tmp_path / "exports" / "zooniverse" / "batch-001.csv"
    assert (report.photos, report.copied, report.shrunk, report.kept) == (4, 2, 1, 0)
    assert report.problems == [("site a/cam 2/gone.JPG",
                                "not found in the images' container (deleted or moved since the task ran?)")]
    opened = panoptes_files(report.manifest, report.columns)
    assert len(opened) == 4
    for path in opened:
        name = path.relative_to(report.manifest.parent).as_posix()
        if name == "site a/cam 2/gone.JPG":
            assert not path.exists()
            continue
        assert 0 < path.stat().st_size <= LIMIT, name
        if name == "site a/cam 1/big.JPG":
            with Image.open(path) as small:
                assert small.format == "JPEG" and small.size[0] < 640
        else:
            assert path.read_bytes() == task["photos"][name]
    with open(report.manifest.parent / "batch-001.problems.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["photo", "problem"], list(report.problems[0])]
    assert not list(tmp_path.rglob("*.part"))

    # run again once the missing photo is back: only it is fetched, and the problems file goes
    store = BlobStore(service)
    store.write_bytes(task["images"], "site a/cam 2/gone.JPG", _photo(4, (40, 30)))
    [again] = prepare(service, service, task["images"], files, tmp_path, PhotoOptions(LIMIT))
    assert (again.copied, again.shrunk, again.kept, again.problems) == (1, 0, 3, [])
    assert not report.problems_file.exists()


def test_the_command_prints_the_upload_line_and_ends_4_while_a_photo_is_missing(
        task: dict[str, Any], storage_connection: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cli import main as cli_main

    class Client:
        def results(self, task_id: str) -> dict[str, Any]:
            return task["answer"]

        def status(self, task_id: str) -> dict[str, Any]:
            return {"id": task_id, "stage": "completed"}

    monkeypatch.setattr(cli_main.State, "client", property(lambda self: Client()))
    monkeypatch.setenv("TRAPBATCH_URL", "http://127.0.0.1:1")
    code = cli_main.main(["zooniverse", "task-1", "--out", str(tmp_path), "--max-bytes", str(LIMIT),
                          "--storage-connection", storage_connection])
    printed = capsys.readouterr()
    assert code == 3, printed  # done, with errors
    manifest = tmp_path / "exports" / "zooniverse" / "batch-001.csv"
    assert f"{manifest}: 4 photos (2 copied, 1 shrunk, 0 re-encoded, 0 already there)" in printed.out
    assert f"upload: panoptes subject-set upload-subjects -f 1 -f 2 -M <subject set id> {manifest}" in printed.out
    assert "1 photo(s) could not be prepared" in printed.err
    assert f"listed in {manifest.with_name('batch-001.problems.csv')}" in printed.err


def _manifest(names: list[str]) -> bytes:
    return ("image_name_1,folder\r\n" + "".join(f'"{n}",x\r\n' for n in names)).encode("utf-8")


def test_each_batch_has_its_own_problems_and_an_odd_name_is_one_of_them(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """Every batch of a variant shares one folder: a shared problems file was rewritten (or deleted) by the last
    batch. A name this disk cannot hold under the folder (a file where a folder must be) is a problem of its own,
    not the end of the run; a colon, which a timestamped camera name holds, is a file name on Linux."""
    state, images = unique_name + "-state", unique_name + "-cams"
    for container in (state, images):
        store.ensure_container(container)
    for name in ("cam/2023-01-01 12:00:00.jpg", "cam/a.jpg", "cam/a.jpg/b.jpg", "cam/c.jpg"):
        store.write_bytes(images, name, _photo(len(name), (40, 30)))
    batches = {1: ["cam/2023-01-01 12:00:00.jpg", "cam/gone.jpg"], 2: ["cam/a.jpg", "cam/a.jpg/b.jpg", "cam/c.jpg"]}
    exports = {}
    for number, names in batches.items():
        blob = f"results/task-1/exports/zooniverse/batch-00{number}.csv"
        store.write_bytes(state, blob, _manifest(names))
        exports[f"zooniverse/batch-00{number}.csv"] = blob
    answer = {"results": {"container": state, "blob": "results/task-1/detections.json",
                          "files": {"original": {"exports": exports}}}}
    service = service_client(storage_connection)
    first, second = prepare(service, service, images, manifests(answer, {}, None)[1], tmp_path, workers=1)
    assert [name for name, _ in first.problems] == ["cam/gone.jpg"] and first.copied == 1
    assert [name for name, _ in second.problems] == ["cam/a.jpg/b.jpg"] and second.copied == 2
    assert "cannot be written under its name here" in second.problems[0][1]
    for report in (first, second):
        with open(report.problems_file, newline="", encoding="utf-8") as fh:
            assert [row[0] for row in csv.reader(fh)] == ["photo", report.problems[0][0]]
    assert (tmp_path / "exports" / "zooniverse" / "cam" / "2023-01-01 12:00:00.jpg").is_file()


def _one_manifest(store: BlobStore, state: str, names: list[str]) -> dict[str, Any]:
    store.ensure_container(state)
    store.write_bytes(state, "results/task-1/exports/zooniverse/batch-001.csv", _manifest(names))
    return {"results": {"container": state, "blob": "results/task-1/detections.json", "files": {"original": {
        "exports": {"zooniverse/batch-001.csv": "results/task-1/exports/zooniverse/batch-001.csv"}}}}}


def test_a_container_that_is_not_there_stops_at_once_and_deleted_photos_do_not(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """A wrong container is said once, not as ten thousand problems; photos deleted since the task ran (a whole
    camera's folder, more than FIRST_FAILURES of them first) are each a problem and the rest is still prepared."""
    from cli.errors import CliError
    from cli.zooniverse_upload import FIRST_FAILURES

    images = unique_name + "-cams"
    store.ensure_container(images)
    names = [f"cam-gone/{i:04d}.jpg" for i in range(FIRST_FAILURES * 2)] + ["cam/kept.jpg"]
    store.write_bytes(images, "cam/kept.jpg", _photo(9, (40, 30)))
    files = manifests(_one_manifest(store, unique_name + "-state", names), {}, None)[1]
    service = service_client(storage_connection)
    with pytest.raises(CliError, match=f"container '{unique_name}-nowhere' does not exist"):
        prepare(service, service, unique_name + "-nowhere", files, tmp_path, workers=2)
    [report] = prepare(service, service, images, files, tmp_path / "again", workers=2)
    assert report.copied == 1 and len(report.problems) == FIRST_FAILURES * 2


def test_photos_that_cannot_be_reached_in_a_row_stop_the_run_even_when_resuming(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    """No network: each photo would be tried through the SDK's retries. Photos already in the folder from an
    earlier run do not hide it."""
    from azure.core.exceptions import ServiceRequestError

    from cli.errors import CliError
    from cli.zooniverse_upload import FIRST_FAILURES

    names = ["cam/0000.jpg"] + [f"cam/{i:04d}.jpg" for i in range(1, FIRST_FAILURES * 5)]
    files = manifests(_one_manifest(store, unique_name + "-state", names), {}, None)[1]
    service = service_client(storage_connection)
    (tmp_path / "exports" / "zooniverse" / "cam").mkdir(parents=True)
    (tmp_path / "exports" / "zooniverse" / "cam" / "0000.jpg").write_bytes(_photo(1, (40, 30)))  # kept
    tried: list[str] = []

    class Down:
        def get_blob_client(self, container: str, name: str) -> Any:
            tried.append(name)

            class Blob:
                def download_blob(self, **kw: Any) -> Any:
                    raise ServiceRequestError("no route to host")

            return Blob()

    with pytest.raises(CliError, match=f"{FIRST_FAILURES} photos in a row could not be read") as stopped:
        prepare(service, Down(), "cams", files, tmp_path, workers=2)
    assert "check the network" in stopped.value.hint and len(tried) < 2 * FIRST_FAILURES


def test_a_folder_where_a_photo_belongs_is_not_taken_for_the_photo(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path) -> None:
    images = unique_name + "-cams"
    store.ensure_container(images)
    store.write_bytes(images, "cam/x.jpg", _photo(2, (40, 30)))
    files = manifests(_one_manifest(store, unique_name + "-state", ["cam/x.jpg"]), {}, None)[1]
    (tmp_path / "exports" / "zooniverse" / "cam" / "x.jpg").mkdir(parents=True)
    service = service_client(storage_connection)
    [report] = prepare(service, service, images, files, tmp_path)
    assert report.kept == 0 and [name for name, _ in report.problems] == ["cam/x.jpg"]


def test_names_that_differ_only_in_case_are_not_written_over_each_other_on_a_case_blind_disk(
        store: BlobStore, unique_name: str, storage_connection: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On macOS or Windows, Cam/IMG_1.JPG and cam/IMG_1.JPG are one file: the second would be "already there" (the
    wrong photo uploaded) or two workers would write one file at once."""
    import cli.zooniverse_upload as zu

    assert zu._case_blind(tmp_path) is False  # this machine's disk tells them apart
    monkeypatch.setattr(zu, "_case_blind", lambda folder: True)
    state, images = unique_name + "-state", unique_name + "-cams"
    for container in (state, images):
        store.ensure_container(container)
    names = ["Cam/IMG_1.JPG", "cam/IMG_1.JPG", "cam/IMG_2.JPG"]
    for name in names:
        store.write_bytes(images, name, _photo(len(name), (40, 30)))
    store.write_bytes(state, "results/task-1/exports/zooniverse/batch-001.csv", _manifest(names))
    answer = {"results": {"container": state, "blob": "results/task-1/detections.json", "files": {"original": {
        "exports": {"zooniverse/batch-001.csv": "results/task-1/exports/zooniverse/batch-001.csv"}}}}}
    service = service_client(storage_connection)
    [report] = prepare(service, service, images, manifests(answer, {}, None)[1], tmp_path, workers=1)
    assert report.copied == 2
    assert report.problems == [("cam/IMG_1.JPG", "differs from 'Cam/IMG_1.JPG' only in letter case or in its "
                                "accents' Unicode form (NFC or NFD), and this disk takes them for one file: prepare "
                                "this batch on a Linux disk")]


def test_names_that_differ_only_in_unicode_form_clash_on_a_disk_that_ignores_the_form(tmp_path: Path) -> None:
    """macOS (APFS, HFS+) takes 'été' written with one code point and with a combining accent for one file: the
    second photo was counted as kept, and its Zooniverse subject showed the first."""
    import cli.zooniverse_upload as zu

    assert zu._form_blind(tmp_path) is False  # this machine's disk tells them apart
    nfc, nfd = "\u00e7a/\u00e9t\u00e9.jpg", "c\u0327a/e\u0301te\u0301.jpg"
    names = [nfc, nfd, "\u00c7A/\u00c9T\u00c9.jpg", "other.jpg"]
    assert zu._Run(False).clashes(tmp_path, names) == {}
    assert zu._Run(False, form_blind=True).clashes(tmp_path, names) == {nfd: nfc}
    assert zu._Run(True, form_blind=True).clashes(tmp_path, names) == {nfd: nfc, names[2]: nfc}
    assert zu._Run(True).clashes(tmp_path, names) == {names[2]: nfc}


# Links an unpacked archive or another user could leave in the folder (link name under the manifest's folder ->
# target under the test's folder, beside the output folder): each would have carried the CLI's bytes out of the folder.
PLANTED = {
    "photo .part": ("site a/cam 1/big.JPG.part", "outside.txt"),
    "manifest .part": ("batch-001.csv.part", "outside.txt"),
    "photo": ("site a/cam 1/small.JPG", "outside.jpg"),  # was "already there": the outside file uploaded as the photo
    "photo folder": ("site a/cam 2", "elsewhere"),
    "problems file": ("batch-001.problems.csv", "outside.txt"),
    "case probe": (".trapbatch-Case-Probe", "created.txt"),
}


@pytest.mark.parametrize("planted", PLANTED)
def test_a_link_planted_in_the_folder_is_not_written_through(
        planted: str, task: dict[str, Any], storage_connection: str, tmp_path: Path) -> None:
    """A photo's or the manifest's ``.part``, a photo, the problems file or the case probe planted as a link to a file
    outside the folder: that file was written (or created, or taken for the photo and uploaded to Zooniverse); a
    linked folder the photos' names run through put them outside. Now a link at a name is replaced and a photo whose
    folder a link leads out of is a problem of its own; the rest is prepared."""
    link, target = PLANTED[planted]
    out = tmp_path / "out"
    folder = out / "exports" / "zooniverse"
    (tmp_path / "elsewhere").mkdir()
    outside = {"outside.txt": b"not the CLI's", "outside.jpg": _photo(7, (20, 20))}
    for name, data in outside.items():
        (tmp_path / name).write_bytes(data)
    plant_link(folder / link, Path(os.path.relpath(tmp_path / target, (folder / link).parent)))
    service = service_client(storage_connection)
    _, files = manifests(task["answer"], {}, None)
    [report] = prepare(service, service, task["images"], files, out, PhotoOptions(LIMIT), workers=2)
    assert {name: (tmp_path / name).read_bytes() for name in outside} == outside
    assert list((tmp_path / "elsewhere").iterdir()) == [] and not (tmp_path / "created.txt").exists()
    assert report.kept == 0 and not report.manifest.is_symlink() and report.manifest.is_file()
    left_out = {"site a/cam 2/gone.JPG"} | ({"site a/cam 2/small, too.JPG"} if planted == "photo folder" else set())
    assert {name for name, _ in report.problems} == left_out
    if planted == "photo folder":
        assert all("leads out of it" in problem for _, problem in report.problems)
    for path in panoptes_files(report.manifest, report.columns):
        name = path.relative_to(folder).as_posix()
        if name not in left_out:
            assert not path.is_symlink() and 0 < path.stat().st_size <= LIMIT, name
    assert not report.problems_file.is_symlink() and not list(out.rglob("*.part"))
