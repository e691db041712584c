"""Same answers as MegaDetector: our worker vs megadetector's own run_detector_batch on the same checkpoint.

MegaDetector runs with ``include_image_size`` and ``include_image_timestamp``, so each success's ``width``/``height``
and ``datetime`` (which the worker always writes, the time when the EXIF has a readable one) must be MegaDetector's
too, EXIF-turned images and unset camera clocks included.

The oracle is the real ``megadetector`` package (installed by scripts/install_oracle_deps.sh), run in a subprocess
on a random-weight YOLOv5n6 checkpoint pickled like MDv5. On CPU in fp32 every detection above 0.05 must pair up
with coordinates within 1e-3 and confidence within 0.005, and failures must carry the same strings.
"""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpu_batch.tests.conftest import REPO_ROOT, run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured, write_oracle_set

CONF_FLOOR = 0.05


def _extra_kinds(folder: Path) -> list[str]:
    """Images whose *handling* must also match: EXIF rotation, grayscale, CMYK, 16-bit PNG, truncated, RGBA."""
    names = []
    exif = Image.Exif()
    exif[274] = 6
    (folder / "rot6.jpg").write_bytes(jpeg_bytes(textured(800, 600, 7), exif=exif))
    (folder / "gray.jpg").write_bytes(jpeg_bytes(textured(640, 480, 8).convert("L")))
    (folder / "cmyk.jpg").write_bytes(jpeg_bytes(textured(640, 480, 9).convert("CMYK")))
    buf = io.BytesIO()
    Image.fromarray((np.arange(200 * 300, dtype=np.uint16).reshape(200, 300) * 7)).save(buf, format="PNG")
    (folder / "gray16.png").write_bytes(buf.getvalue())
    whole = jpeg_bytes(textured(900, 600, 10))
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    buf = io.BytesIO()
    textured(500, 400, 11).convert("RGBA").save(buf, format="PNG")
    (folder / "rgba.png").write_bytes(buf.getvalue())
    names += ["rot6.jpg", "gray.jpg", "cmyk.jpg", "gray16.png", "truncated.jpg", "rgba.png"]
    # capture times: DateTimeOriginal (Exif IFD) beside a turn, a camera clock never set, only IFD0's DateTime
    # (MegaDetector reads DateTimeOriginal alone), a PNG's eXIf chunk
    # and a grayscale JPEG and an RGBA PNG, dated and turned: MegaDetector keeps their time but not their turn
    for name, fmt, tags in (("dated_rot6.jpg", "JPEG", {274: 6, 36867: "2024:05:02 09:59:58"}),
                            ("gray_dated_rot6.jpg", "JPEG", {274: 6, 36867: "2024:05:03 21:00:01"}),
                            ("rgba_dated_rot6.png", "PNG", {274: 6, 36867: "2024:05:03 21:00:02"}),
                            ("clock_unset.jpg", "JPEG", {36867: "0000:00:00 00:00:00"}),
                            ("ifd0_only.jpg", "JPEG", {306: "2024:05:02 10:00:00"}),
                            ("dated.png", "PNG", {36867: "2023:12:31 23:59:59"})):
        exif = Image.Exif()
        for tag, value in tags.items():
            (exif.get_ifd(0x8769) if tag == 36867 else exif)[tag] = value
        buf = io.BytesIO()
        mode = "L" if name.startswith("gray") else "RGBA" if name.startswith("rgba") else "RGB"
        textured(640, 480, len(names)).convert(mode).save(buf, format=fmt, exif=exif.tobytes())  # PNG: needs IFD0
        (folder / name).write_bytes(buf.getvalue())
        names.append(name)
    return names


def _run_megadetector(model: Path, folder: Path, names: list[str], out: Path, cuda: bool = False
                      ) -> dict[str, dict[str, Any]]:
    env = dict(os.environ, YOLO_CONFIG_DIR=str(out.parent / "yolo-config"))
    if not cuda:  # MegaDetector takes a GPU whenever it sees one; the fp32 comparison must be CPU against CPU
        env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "gpu_batch/tests/md_oracle_runner.py"), str(model),
                           str(out), *[str(folder / n) for n in names]], capture_output=True, text=True, env=env,
                          cwd=out.parent, timeout=600)
    if proc.returncode != 0 and "No module named 'megadetector'" in proc.stderr:
        pytest.fail("megadetector oracle not installed: run scripts/install_oracle_deps.sh", pytrace=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads(out.read_text())
    return {Path(e["file"]).name: e for e in doc["images"]}


def _iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else float(a == b)


def compare(ours: dict[str, dict[str, Any]], theirs: dict[str, dict[str, Any]], coord_tol: float,
            conf_tol: float, min_iou: float | None = None) -> int:
    """Assert every detection above CONF_FLOOR on either side has a partner, and each success's size and capture
    time are MegaDetector's (``--include_image_size``, ``--include_image_timestamp``, which writes null for no time:
    the worker leaves the key out); returns the number of pairs."""
    assert set(ours) == set(theirs)
    pairs = 0
    for name in sorted(ours):
        a, b = ours[name], theirs[name]
        assert a.get("failure") == b.get("failure"), (name, a.get("failure"), b.get("failure"))
        if not a.get("failure"):  # MegaDetector also sizes an image it opened but failed at inference; we do not
            assert (a.get("width"), a.get("height")) == (b.get("width"), b.get("height")), name
            assert a.get("datetime") == b.get("datetime") and a.get("datetime", "") is not None, name
        else:
            assert "width" not in a and "height" not in a and "datetime" not in a, name
        if a.get("failure"):
            continue
        for src, dst, label in ((a, b, "ours->md"), (b, a, "md->ours")):
            candidates = [d for d in dst["detections"] if d["conf"] > CONF_FLOOR - conf_tol]
            for det in (d for d in src["detections"] if d["conf"] > CONF_FLOOR + conf_tol):
                def close(o: dict[str, Any]) -> bool:
                    if o["category"] != det["category"] or abs(o["conf"] - det["conf"]) > conf_tol:
                        return False
                    if min_iou is not None:
                        return _iou(o["bbox"], det["bbox"]) >= min_iou or all(
                            abs(x - y) <= coord_tol for x, y in zip(o["bbox"], det["bbox"]))
                    return all(abs(x - y) <= coord_tol for x, y in zip(o["bbox"], det["bbox"]))
                assert any(close(o) for o in candidates), f"{label} {name}: no partner for {det}"
                pairs += 1
    return pairs


def test_worker_matches_megadetector_cpu_fp32(checkpoint: Path, tmp_path: Path) -> None:
    folder = tmp_path / "images"
    names = write_oracle_set(folder) + _extra_kinds(folder)
    theirs = _run_megadetector(checkpoint, folder, names, tmp_path / "md.json")
    manifest = write_manifest(tmp_path / "m.json", names, str(checkpoint))
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                           str(tmp_path / "ours.json"), "--device", "cpu", "--workers", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = {e["file"]: e for e in json.loads((tmp_path / "ours.json").read_text())["images"]}
    pairs = compare(ours, theirs, coord_tol=1e-3, conf_tol=0.005)
    n_real = sum(1 for e in ours.values() if not e.get("failure"))
    assert n_real >= 12 and pairs >= 2 * 12, (n_real, pairs)  # the comparison is far from empty
    # The handling of special inputs matches MegaDetector's (checked above); pin what that is.
    assert ours["cmyk.jpg"]["failure"] == "image access failure"
    assert ours["gray16.png"]["failure"] == "inference failure"
    assert ours["rot6.jpg"]["detections"] and ours["truncated.jpg"]["detections"]
    assert (ours["rot6.jpg"]["width"], ours["rot6.jpg"]["height"]) == (600, 800)  # stored 800 x 600, turned
    assert all(isinstance(e.get("width"), int) for e in ours.values() if not e.get("failure"))
    assert {n: e["datetime"] for n, e in ours.items() if "datetime" in e} == {
        "dated_rot6.jpg": "2024:05:02 09:59:58", "dated.png": "2023:12:31 23:59:59",
        "gray_dated_rot6.jpg": "2024:05:03 21:00:01", "rgba_dated_rot6.png": "2024:05:03 21:00:02"}
    assert (ours["dated_rot6.jpg"]["width"], ours["dated_rot6.jpg"]["height"]) == (480, 640)
    assert (ours["gray_dated_rot6.jpg"]["width"], ours["gray_dated_rot6.jpg"]["height"]) == (640, 480)  # not turned
    print(f"oracle: {len(names)} images, {pairs} detection pairs above {CONF_FLOOR} matched")


try:
    import torch

    _cuda = torch.cuda.is_available()
except ImportError:  # pragma: no cover
    _cuda = False


# "eager-stage-threads-2": small batches staged two at a time, each on its own stream and hardware decoder;
# "eager-cpu-decode-half": every other JPEG decoded by PIL on a fetch thread and uploaded, the rest on the GPU.
_GPU_MODES = {"eager": [], "compiled": ["--compile"],
              "eager-stage-threads-2": ["--stage-threads", "2", "--batch-size", "4"],
              "eager-cpu-decode-half": ["--cpu-decode-share", "0.5", "--batch-size", "4"]}


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda, reason="needs a CUDA GPU (fp16 YOLOv5x6 oracle comparison)")
@pytest.mark.parametrize("mode", list(_GPU_MODES))
def test_worker_matches_megadetector_gpu_fp16_x6(tmp_path: Path, mode: str) -> None:
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    ckpt = write_test_checkpoint(tmp_path / "md_test_x6.pt", arch="yolov5x6", seed=0)
    folder = tmp_path / "images"
    names = write_oracle_set(folder)
    theirs = _run_megadetector(ckpt, folder, names, tmp_path / "md.json", cuda=True)
    manifest = write_manifest(tmp_path / "m.json", names, str(ckpt))
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                           str(tmp_path / "ours.json"), "--device", "cuda", *_GPU_MODES[mode]], timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_line(proc)
    assert summary["device"] == "cuda"
    if mode == "eager-cpu-decode-half":  # both decoders took their share of the JPEGs
        by = summary["decoded_by"]
        assert by.get("cpu", 0) > 0 and by.get("nvimgcodec-hw", 0) + by.get("nvjpeg-cuda", 0) > 0, by
    ours = {e["file"]: e for e in json.loads((tmp_path / "ours.json").read_text())["images"]}
    pairs = compare(ours, theirs, coord_tol=2e-3, conf_tol=0.02, min_iou=0.95)
    assert pairs > 0


def test_worker_matches_megadetector_on_a_v1000_style_checkpoint_with_image_size_metadata(tmp_path: Path) -> None:
    """MDv1000 files carry megadetector_info.json (input size); both sides must read it and letterbox alike."""
    from gpu_batch.worker.loader import load_model, read_model_metadata
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    ckpt = write_test_checkpoint(tmp_path / "md_v1000_style.pt", arch="yolov5n", seed=3, metadata={"image_size": 640})
    assert read_model_metadata(ckpt) == {"image_size": 640}
    loaded = load_model(ckpt)
    assert (loaded.image_size, loaded.stride) == (640, 32)
    folder = tmp_path / "images"
    names = write_oracle_set(folder)
    theirs = _run_megadetector(ckpt, folder, names, tmp_path / "md.json")
    manifest = write_manifest(tmp_path / "m.json", names, str(ckpt))
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                           str(tmp_path / "ours.json"), "--device", "cpu", "--workers", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = {e["file"]: e for e in json.loads((tmp_path / "ours.json").read_text())["images"]}
    assert compare(ours, theirs, coord_tol=1e-3, conf_tol=0.005) >= 10
