"""`trapbatch zooniverse` against Azurite: a manifest's photos land beside it where the Panoptes CLI looks for them
(relative to the manifest's folder), each within the size limit; photos already small are the originals byte for
byte; a missing photo is named, not fatal; a second run fetches nothing again."""
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
from cli.zooniverse_upload import PROBLEMS_FILE, manifests, prepare

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
    [report] = prepare(service, service, task["images"], files, tmp_path, LIMIT, workers=3)
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
    with open(report.manifest.parent / PROBLEMS_FILE, newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["photo", "problem"], list(report.problems[0])]
    assert not list(tmp_path.rglob("*.part"))

    # run again once the missing photo is back: only it is fetched, and the problems file goes
    store = BlobStore(service)
    store.write_bytes(task["images"], "site a/cam 2/gone.JPG", _photo(4, (40, 30)))
    [again] = prepare(service, service, task["images"], files, tmp_path, LIMIT)
    assert (again.copied, again.shrunk, again.kept, again.problems) == (1, 0, 3, [])
    assert not (report.manifest.parent / PROBLEMS_FILE).exists()


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
    assert code == 4, printed
    manifest = tmp_path / "exports" / "zooniverse" / "batch-001.csv"
    assert f"{manifest}: 4 photos (2 copied, 1 shrunk, 0 already there)" in printed.out
    assert f"upload: panoptes subject-set upload-subjects -f 1 -f 2 -M <subject set id> {manifest}" in printed.out
    assert "1 photo(s) could not be prepared" in printed.err and "problems.csv" in printed.err
