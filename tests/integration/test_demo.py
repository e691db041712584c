"""`make demo`'s script, run as a newcomer would (in a subprocess), on the bundled samples."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from core import mdformat

ROOT = Path(__file__).resolve().parents[2]


def test_demo_writes_validated_results_listing_every_sample_once(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    env = {**os.environ, "TRAPBATCH_DEMO_OUTPUT": str(out)}
    env.pop("TRAPBATCH_MODEL", None)
    proc = subprocess.run([sys.executable, "-m", "scripts.demo"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "RANDOM weights" in proc.stdout and "meaningless" in proc.stdout  # says so loudly
    assert "img/s" in proc.stdout and "wall time" in proc.stdout
    # the shards ran on one resident worker, stopped with the rest (devhost stops it with itself: devhost/stopping.py)
    stopped = re.search(r"stopped devhost, the resident worker \(pid (\d+)\) and Azurite", proc.stdout)
    assert stopped, proc.stdout[-2000:]
    assert not Path(f"/proc/{stopped.group(1)}").exists() or \
        Path(f"/proc/{stopped.group(1)}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    doc = json.loads((out / "detections.json").read_text())
    samples = sorted(p.relative_to(ROOT / "samples" / "images").as_posix()
                     for p in (ROOT / "samples" / "images").rglob("*")
                     if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif"))
    mdformat.validate(doc, expected_files=samples)
    failures = {im["file"]: im["failure"] for im in doc["images"] if im.get("failure")}
    assert failures == {"camera-01/2024-06-01/IMG_0007_corrupt.JPG": "image access failure"}
    assert (out / "previews" / "index.html").read_text().count("<canvas") > 0
    table = (out / "detections.csv").read_text(encoding="utf-8").splitlines()
    assert table[0].startswith("file,folder,capture_time,status") and len(table) == 1 + len(samples)
    # the cameras' EXIF capture times, read by the worker, reach the results, the CSV and the Camtrap DP package
    dated = {im["file"]: im.get("datetime") for im in doc["images"]}
    assert dated["camera-01/2024-06-01/IMG_0005.JPG"] == "2024:06:01 06:20:01"
    assert dated["camera-01/2024-06-02/IMG_0100_rotated.jpg"] == "2024:06:02 19:05:00"
    assert dated["camera-02/2024-06-01/snapshot.png"] is None and sum(map(bool, dated.values())) == 37
    assert any(line.startswith("camera-01/2024-06-01/IMG_0005.JPG,camera-01/2024-06-01,2024-06-01 06:20:01,ok,")
               for line in table)
    media = (out / "exports" / "camtrap-dp" / "media.csv").read_text(encoding="utf-8")
    # filePath is the photo's URL in the demo's container of the local Azurite account
    assert re.search(r",2024-06-01T06:20:01\+00:00,http://127\.0\.0\.1:\d+/devstoreaccount1/[a-z0-9-]+/"
                     r"camera-01/2024-06-01/IMG_0005\.JPG,", media), media[:400]
    assert (out / "exports" / "coco.json").is_file() and (out / "exports" / "camtrap-dp" / "datapackage.json").is_file()
    assert "exports:  " in proc.stdout and "/exports/" in proc.stdout  # said where they are
    # the README downloaded with them names each of them (every file it lists is there) and the demo points at it
    from tests.readme_listing import listed_paths

    listed = listed_paths((out / "README.txt").read_text(encoding="utf-8"))
    assert {"README.txt", "detections.json", "detections.csv", "damaged.csv", "repeated-detections.json",
            "exports/coco.json", "exports/camera-days.csv"} <= set(listed), listed
    assert all((out / path).is_file() for path in listed) and "readme:   " in proc.stdout
    check_zooniverse_folder(out, doc, proc.stdout)
    assert "taken:  2024-06-01 06:00:00 to 2024-06-02 19:05:00 (37 of 41 images have an EXIF capture time)" \
        in proc.stdout
    # the camera visits: MegaDetector's sequences (create_sequences) of the successful images with a time
    from megadetector.data_management.cct_json_utils import create_sequences

    from gpu_batch.formats import camtrapdp
    by_camera = camtrapdp.CameraRule("", 1)  # the demo's camera_depth: camera-01/2024-06-01/ is camera-01
    timed = [{"file_name": im["file"], "location": camtrapdp.deployment_id(im["file"], "", by_camera),
              "datetime": im["datetime"].replace(":", "-", 2)} for im in doc["images"]
             if im.get("datetime") and not im.get("failure")]
    visits = len({im["seq_id"] for im in create_sequences(timed)})
    assert 3 < visits < len(timed)  # the samples' bursts: several photos a visit
    cameras = {camtrapdp.deployment_id(im["file_name"], "", by_camera) for im in timed}
    assert cameras == {"camera-01", "camera-02", "camera-03"}  # not a camera a day folder
    assert f"events: {visits} camera visits at {len(cameras)} cameras (a camera's photos at most 60 s apart" \
        in proc.stdout
    # and per camera, in camera-visits.csv and on the preview page
    table = list(csv.DictReader(io.StringIO((out / "exports" / "camera-visits.csv").read_text(encoding="utf-8"))))
    assert sorted(r["deploymentID"] for r in table) == sorted(cameras) and len(cameras) >= 2
    assert sum(int(r["visits"]) for r in table) == visits
    assert sum(int(r["images"]) for r in table) == len(timed)
    assert "/exports/camera-visits.csv: each camera's visits" in proc.stdout
    # and day by day in camera-days.csv: every day from a camera's first photo to its last, the same totals
    days = list(csv.DictReader(io.StringIO((out / "exports" / "camera-days.csv").read_text(encoding="utf-8"))))
    assert {r["deploymentID"] for r in days} == cameras
    assert {r["date"] for r in days if r["deploymentID"] == "camera-01"} >= {"2024-06-01", "2024-06-02"}
    deployments = list(csv.DictReader(io.StringIO((out / "exports" / "camtrap-dp" / "deployments.csv").read_text(
        encoding="utf-8"))))
    assert {r["deploymentID"] for r in deployments} == cameras  # a deployment per camera over its days
    assert sum(int(r["visits"]) for r in days) == visits and sum(int(r["photos"]) for r in days) == len(timed)
    assert "/exports/camera-days.csv: each camera's photos and visits day by day" in proc.stdout
    assert f"camera visits: {visits} visits at {len(cameras)} cameras" in (out / "previews" / "index.html").read_text()
    from tests.unit.test_camtrapdp import validate  # the whole package, event rows included, is valid Camtrap DP
    report = validate(out / "exports" / "camtrap-dp")
    assert report.valid, report.flatten(["type", "note"])
    # the samples' notes file is not an image: the results, the page and the demo say it was not run
    assert doc["info"]["trapbatch"]["not_images"] == {
        "files": 1, "kinds": {".txt": {"files": 1, "examples": ["camera-02/2024-06-02/notes.txt"]}}}
    assert "not run: 1 file is not an image and was not run (.txt 1)" in proc.stdout
    assert "Not run: 1 file is not an image" in (out / "previews" / "index.html").read_text()


def check_zooniverse_folder(out: Path, doc: dict[str, object], stdout: str) -> None:
    """The demo's Zooniverse manifest has its photos beside it, where the Panoptes CLI opens them: every sample that
    did not fail and is whole, none over Zooniverse's limit, none with EXIF, the sample that its EXIF turns written upright."""
    from PIL import Image

    folder = out / "exports" / "zooniverse"
    # the truncated sample is cut short (damaged.csv): volunteers would see its grey part, so it is no subject, and
    # the demo's summary says so, as `trapbatch status` does
    cut_short = set((out / "damaged.csv").read_text(encoding="utf-8").splitlines()[1:])
    assert cut_short == {"camera-02/2024-06-02/IMG_0008_truncated.JPG"}
    assert "zooniverse: 1 photo cut short left out of the subjects" in stdout
    subjects = sorted(str(im["file"]) for im in doc["images"]  # type: ignore[attr-defined]
                      if not im.get("failure") and im["file"] not in cut_short)  # type: ignore[index]
    written = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                     if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".gif"))
    assert written == subjects
    for name in written:
        with Image.open(folder / name) as photo:
            assert (folder / name).stat().st_size <= 1_000_000 and not photo.getexif(), name
    with Image.open(folder / "camera-01/2024-06-02/IMG_0100_rotated.jpg") as turned, \
            Image.open(ROOT / "samples/images/camera-01/2024-06-02/IMG_0100_rotated.jpg") as original:
        assert original.getexif().get(0x0112) not in (None, 1) and turned.size == original.size[::-1]
    from cli.zooniverse_upload import upload_command
    from scripts.demo import _show

    assert f"upload: {upload_command(Path(_show(folder / 'batch-001.csv')), [0])}" in stdout
