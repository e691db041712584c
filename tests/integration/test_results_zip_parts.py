"""A large task's results zip, deflated in parallel parts and composed, in Azurite (``adapters.zip_parts``): the zip
holds exactly the linked files, byte for byte, wherever the parts are cut; a file rewritten while the parts read it
yields no zip (and the results route builds again); the work blobs are gone afterwards; the orchestration runs the
parts with the real activities."""
from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from activities.results_zip import run_build
from adapters import zip_parts
from adapters.blobs import BlobStore
from adapters.results_bundle import linked_blobs, zip_is_current, zip_path
from core import contracts as c
from core.zip_builds import named_zip
from core.zipformat import part_inputs
from gpu_batch import layout
from orchestrations.results_zip import zip_results
from tests.orchestrations.replay import run_orchestrator


@pytest.fixture
def files(store: BlobStore, unique_name: str) -> tuple[str, str, dict[str, bytes]]:
    """A finished task's linked files (results, CSV, exports: one empty, one with a non-ASCII name) and a file in the
    task's folder that is not linked (never zipped)."""
    container, task = unique_name + "z", "task-" + unique_name[-12:]
    store.ensure_container(container)
    rng = random.Random(11)
    lines = b"".join(b'{"file": "cam%d/IMG_%05d.JPG", "max_detection_conf": 0.%03d}\n' % (i % 3, i, i % 997)
                     for i in range(900))
    made = {layout.results_blob(task): b'{"images": [\n' + lines + b"]}\n",
            layout.csv_blob(task): b"file,conf\n" + lines,
            layout.exports_prefix(task) + "coco.json": rng.randbytes(7_000),  # incompressible
            layout.exports_prefix(task) + "zooniverse/empty.csv": b"",
            layout.exports_prefix(task) + "ünïcødé 森.csv": "名前\n".encode() * 40}
    for name, body in made.items():
        store.write_bytes(container, name, body)
    store.write_bytes(container, layout.preview_sample_blob(task), b"{}")
    assert set(linked_blobs(store, container, task)) == set(made)
    return container, task, made


def zip_blob(store: BlobStore, container: str, task: str) -> str:
    """The zip the manifest names: the last build's, under its own name (``layout.results_zip_blob``)."""
    return named_zip(store.read_json_or_none(container, layout.results_zip_manifest_blob(task)), task)


def build_in_parts(store: BlobStore, container: str, task: str, part_bytes: int) -> tuple[c.ResultsZipOutput, Any]:
    before = set(store.list_names(container, layout.results_zip_folder(task)))
    planned = run_build(store, container, task, part_bytes)
    assert planned["bytes"] == 0 and "plan" in planned
    assert set(store.list_names(container, layout.results_zip_folder(task))) == before  # a plan writes nothing
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned["plan"])]
    done = zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned["plan"],
                                                                        parts=parts))
    return done, planned["plan"]


def check_zip(store: BlobStore, container: str, task: str, made: dict[str, bytes], tmp_path: Path) -> None:
    manifest = store.read_json(container, layout.results_zip_manifest_blob(task))
    build = layout.results_zip_build(task, manifest["zip"])
    assert build and manifest["zip"] == zip_blob(store, container, task)  # a build's own name, never the shared one
    data = store.read_bytes(container, manifest["zip"])
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == sorted(zip_path(task, n) for n in made)
        for name, body in made.items():
            assert zf.read(zip_path(task, name)) == body, name
    if shutil.which("unzip"):
        (tmp_path / "z.zip").write_bytes(data)
        tested = subprocess.run(["unzip", "-tq", str(tmp_path / "z.zip")], capture_output=True, text=True)
        assert tested.returncode == 0, tested.stdout + tested.stderr
    assert manifest["bytes"] == len(data)
    assert zip_is_current(manifest, linked_blobs(store, container, task),
                          store.etag_or_none(container, manifest["zip"]))


@pytest.mark.parametrize("part_bytes", [997, 4_096, 40_000])
def test_parts_compose_a_zip_of_exactly_the_linked_files(store: BlobStore, files: Any, part_bytes: int,
                                                         tmp_path: Path) -> None:
    container, task, made = files
    done, plan = build_in_parts(store, container, task, part_bytes)
    total = sum(len(b) for b in made.values())
    assert len(plan["parts"]) == -(-total // part_bytes) > 1
    assert done == {"blob": layout.results_zip_blob(task, plan["build"]), "files": len(made), "bytes": done["bytes"]}
    check_zip(store, container, task, made, tmp_path)
    work = layout.results_zip_work_prefix(task)
    assert len(list(store.list_names(container, work))) == len(plan["parts"])
    assert zip_parts.clean_parts(store, container, task, plan["build"]) == len(plan["parts"])
    assert list(store.list_names(container, work)) == []


def test_small_files_are_zipped_in_one_pass(store: BlobStore, files: Any, tmp_path: Path) -> None:
    container, task, made = files
    done = run_build(store, container, task)  # the default part size: far above these files
    assert "plan" not in done and done["files"] == len(made) and done["bytes"] > 0
    check_zip(store, container, task, made, tmp_path)
    assert done["blob"] == zip_blob(store, container, task)
    assert list(store.list_names(container, layout.results_zip_work_prefix(task))) == []


def test_one_pass_and_parts_zips_date_and_permit_their_members_alike(store: BlobStore, files: Any,
                                                                      tmp_path: Path) -> None:
    """Each member dated by its blob's last change, a regular file readable by all (``-rw-r--r--``), whichever way
    the zip was built. Before, a zip built in one pass (up to 256 MiB of files) dated every member 1980-01-01 and
    unpacked it ``-rw-------`` (``zipfile``'s defaults for ``open(name, "w")``): colleagues on a shared server could
    not read the files."""
    container, task, made = files

    def entries() -> dict[str, tuple[Any, int, int]]:
        data = store.read_bytes(container, zip_blob(store, container, task))
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return {i.filename: (i.date_time, i.external_attr >> 16, i.create_system) for i in zf.infolist()}

    run_build(store, container, task)
    one_pass = entries()
    build_in_parts(store, container, task, 4_096)
    assert one_pass == entries()
    listed = linked_blobs(store, container, task)
    for name, f in listed.items():
        date_time, mode, system = one_pass[zip_path(task, name)]
        modified = datetime.fromisoformat(f["modified"])
        assert date_time == (modified.year, modified.month, modified.day, modified.hour, modified.minute,
                             modified.second // 2 * 2)
        assert (mode, system) == (0o100644, 3)
    if shutil.which("unzip"):
        (tmp_path / "z.zip").write_bytes(store.read_bytes(container, zip_blob(store, container, task)))
        run_build(store, container, task)
        (tmp_path / "one.zip").write_bytes(store.read_bytes(container, zip_blob(store, container, task)))
        subprocess.run(["unzip", "-q", str(tmp_path / "one.zip"), "-d", str(tmp_path / "x")], check=True)
        unpacked = tmp_path / "x" / zip_path(task, layout.results_blob(task))
        assert unpacked.stat().st_mode & 0o777 == 0o644
        assert unpacked.stat().st_mtime > datetime(2020, 1, 1).timestamp()


def test_a_file_rewritten_while_the_parts_read_gives_no_zip(store: BlobStore, files: Any) -> None:
    container, task, made = files
    planned = run_build(store, container, task, 2_000)
    store.write_bytes(container, layout.csv_blob(task), b"file,conf\nrewritten\n")  # e.g. a repeat search again
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned["plan"])]
    assert {p.get("changed") for p in parts} == {None, layout.csv_blob(task)}
    done = zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned["plan"],
                                                                        parts=parts))
    assert done["stale"] == layout.csv_blob(task) and done["bytes"] == 0
    assert not store.exists(container, done["blob"]) and done["blob"] == layout.results_zip_blob(
        task, planned["plan"]["build"])
    assert not list(store.list_names(container, layout.results_zip_folder(task)))  # no manifest either


def test_a_part_answer_that_does_not_match_the_plan_is_refused(store: BlobStore, files: Any) -> None:
    container, task, _ = files
    planned = run_build(store, container, task, 2_000)
    parts = [zip_parts.deflate_part(store, container, asked) for asked in part_inputs(task, planned["plan"])]
    parts[1] = {**parts[1], "chunks": parts[1]["chunks"][:-1]}
    with pytest.raises(ValueError, match="were planned"):
        zip_parts.combine(store, container, c.ResultsZipCombineInput(task_id=task, plan=planned["plan"],
                                                                     parts=parts))


def test_the_zip_orchestration_runs_the_parts_with_the_real_activities(
        store: BlobStore, files: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    container, task, made = files
    monkeypatch.setattr(zip_parts, "PART_BYTES", 3_000)
    bodies = {c.BUILD_RESULTS_ZIP: lambda p: run_build(store, container, p["task_id"], zip_parts.PART_BYTES),
              c.RESULTS_ZIP_PART: lambda p: zip_parts.deflate_part(store, container, p),
              c.RESULTS_ZIP_COMBINE: lambda p: zip_parts.combine(store, container, p),
              c.RESULTS_ZIP_CLEAN: lambda p: zip_parts.clean_parts(store, container, p["task_id"],
                                                                   p.get("build", "")),
              c.SCHEDULE_RESULTS_ZIP_SWEEP: lambda p: {"scheduled": True, "instance_id": p["instance_id"]}}
    run = run_orchestrator(zip_results, {"task_id": task}, lambda name, p: bodies[name](json.loads(json.dumps(p))))
    assert run.status == "Completed", run.error
    assert run.activity_names.count(c.RESULTS_ZIP_PART) == -(-sum(len(b) for b in made.values()) // 3_000)
    assert run.activity_names[-3:] == [c.RESULTS_ZIP_COMBINE, c.RESULTS_ZIP_CLEAN, c.SCHEDULE_RESULTS_ZIP_SWEEP]
    check_zip(store, container, task, made, tmp_path)
    assert list(store.list_names(container, layout.results_zip_work_prefix(task))) == []
