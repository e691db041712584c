"""Robust input: every kind of awkward image gets a result or a failure entry, and the shard goes on.

One worker run over a folder holding one image of each kind (module fixture), then one test per kind.
"""
from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gpu_batch.tests.conftest import run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.formats import camtrapdp
from gpu_batch.worker.preprocess import (CaptureTime, ImageAccessError, decode_image, decode_image_and_time,
                                         letterbox_cpu, letterbox_geometry)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size (decompression-bomb guard must refuse it before decoding)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


KINDS: dict[str, Any] = {
    "corrupt.jpg": lambda: bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
    "truncated.jpg": lambda: jpeg_bytes(textured(800, 600, 2))[:9000],
    "zero.jpg": lambda: b"",
    "not_an_image.jpg": lambda: b"%PDF-1.4 this is not an image\n" * 50,
    "cmyk.jpg": lambda: jpeg_bytes(textured(400, 300, 3).convert("CMYK")),
    "gray.jpg": lambda: jpeg_bytes(textured(400, 300, 4).convert("L")),
    "gray16.png": lambda: _png(Image.fromarray(np.arange(120 * 160, dtype=np.uint16).reshape(120, 160) * 3)),
    "exif_rot8.jpg": lambda: jpeg_bytes(textured(600, 400, 5), exif=_exif(8)),
    "dated_rot6.jpg": lambda: _dated("2024:05:02 09:59:58", orientation=6),
    # EXIF 2.31 offsets: OffsetTimeOriginal (0x9011) and OffsetTime (0x9010) in the Exif IFD, as cameras write them
    # (OffsetTimeDigitized, 0x9012, in test_the_photos_exif_offsets_come_with_its_capture_time_on_both_decode_paths)
    "zoned.jpg": lambda: _dated("2024:05:02 09:59:58", offsets={0x9011: "+02:00", 0x9010: "+01:00"}),
    "bomb.png": lambda: _png_header_only(20000, 20000),
    "tiny_1x1.png": lambda: _png(Image.new("RGB", (1, 1), (200, 10, 10))),
    "d\u00e9j\u00e0 vu/\u732b \u5199\u771f 01.jpg": lambda: jpeg_bytes(textured(320, 240, 6)),
    "with space & sign+.jpg": lambda: jpeg_bytes(textured(300, 200, 7)),
}

# MegaDetector's failure string (see test_oracle for the cross-check against MegaDetector itself) and trapbatch's
# reason; every one of these is permanent: the same bytes fail the same way on every attempt.
EXPECTED_FAILURE = {
    "corrupt.jpg": ("image access failure", "undecodable"),
    "zero.jpg": ("image access failure", "undecodable"),
    "not_an_image.jpg": ("image access failure", "undecodable"),
    "cmyk.jpg": ("image access failure", "unsupported"),
    "gray16.png": ("inference failure", "unsupported"),
    "bomb.png": ("image access failure", "unsupported"),
    "missing.jpg": ("image access failure", "not_found"),
}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[274] = orientation
    return exif


@pytest.fixture(scope="module")
def robust_run(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    root = tmp_path_factory.mktemp("robust")
    folder = root / "images"
    for name, make in KINDS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(make())
    names = list(KINDS) + ["missing.jpg"]
    manifest = write_manifest(root / "m.json", names, str(checkpoint))
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file",
                           str(root / "out.json"), "--device", "cpu", "--workers", "2"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((root / "out.json").read_text(encoding="utf-8"))
    return {e["file"]: e for e in doc["images"]}, summary_line(proc)


@pytest.mark.parametrize("name", list(KINDS) + ["missing.jpg"])
def test_each_kind_gets_exactly_one_entry(robust_run: tuple[dict[str, Any], dict[str, Any]], name: str) -> None:
    entries, summary = robust_run
    entry = entries[name]
    expected = EXPECTED_FAILURE.get(name)
    if expected is None:
        assert "failure" not in entry and isinstance(entry["detections"], list), entry
        for d in entry["detections"]:
            assert d["category"] in ("1", "2", "3") and 0 < d["conf"] <= 1 and len(d["bbox"]) == 4
            assert all(0.0 <= v <= 1.0 for v in d["bbox"])
        assert entry.get("datetime") == ("2024:05:02 09:59:58" if name in ("dated_rot6.jpg", "zoned.jpg")
                                         else None), entry
        # the photo's own offsets, as MegaDetector's --include_exif_tags OffsetTimeOriginal,OffsetTime writes them
        assert entry.get("exif_metadata") == ({"OffsetTimeOriginal": "+02:00", "OffsetTime": "+01:00"}
                                              if name == "zoned.jpg" else None), entry
    else:
        failure, reason = expected
        assert entry == {"file": name, "failure": failure, "detections": None, "failure_kind": "permanent",
                         "failure_reason": reason}
    assert summary["images"] == len(KINDS) + 1 == len(entries)


def test_exif_rotation_swaps_dimensions() -> None:
    decoded = decode_image(jpeg_bytes(textured(600, 400, 5), exif=_exif(6)))
    assert decoded.shape == (600, 400, 3)
    mirrored = decode_image(jpeg_bytes(textured(600, 400, 5), exif=_exif(2)))  # MegaDetector ignores mirroring
    assert mirrored.shape == (400, 600, 3)


def _dated(value: object, orientation: int | None = None, fmt: str = "JPEG",
           offsets: dict[int, str] | None = None, ifd0_offsets: dict[int, str] | None = None) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = value  # DateTimeOriginal lives in the Exif IFD
    exif.get_ifd(0x8769).update(offsets or {})  # OffsetTimeOriginal / OffsetTime: the Exif IFD, where EXIF puts them
    exif.update(ifd0_offsets or {})
    if orientation is not None:
        exif[274] = orientation
    buf = io.BytesIO()
    textured(120, 80, 3).save(buf, format=fmt, exif=exif.tobytes())  # bytes: PNG skips an Exif without IFD0 tags
    return buf.getvalue()


@pytest.mark.parametrize(("value", "want"), [("2024:05:02 09:59:58", "2024:05:02 09:59:58"),
                                             ("0000:00:00 00:00:00", None),  # a camera clock never set
                                             ("2024-05-02 09:59:58", None),  # not EXIF's form: MegaDetector drops it
                                             # read_pil_exif strips it (and drops nothing else)
                                             ("2024:05:02 09:59:58 ", "2024:05:02 09:59:58"),
                                             ("", None)])
def test_capture_time_is_megadetectors_datetime_on_both_decode_paths(value: str, want: str | None) -> None:
    from gpu_batch.worker.devices import gpu_decodable_jpeg

    data = _dated(value, orientation=6)
    pixels, captured = decode_image_and_time(data)  # the CPU path (and the GPU path's exact fallback)
    time = None if want is None else CaptureTime(want)  # no offset tags: none
    assert (pixels.shape, captured) == ((120, 80, 3), time)
    assert gpu_decodable_jpeg(data) == (120, 80, 270, time)  # the nvJPEG / hardware path reads it from the header


def test_capture_time_absent_without_exif_and_read_from_a_png() -> None:
    from gpu_batch.worker.devices import gpu_decodable_jpeg

    assert decode_image_and_time(jpeg_bytes(textured(64, 48, 1)))[1] is None
    assert gpu_decodable_jpeg(jpeg_bytes(textured(64, 48, 1))) == (48, 64, 0, None)
    assert decode_image_and_time(_dated("2023:12:31 23:59:59", fmt="PNG"))[1] == CaptureTime("2023:12:31 23:59:59")
    assert decode_image_and_time(_png(textured(64, 48, 1)))[1] is None


@pytest.mark.parametrize(("mode", "fmt"), [("L", "JPEG"), ("L", "PNG"), ("RGBA", "PNG")])
def test_a_grayscale_or_rgba_photo_keeps_its_capture_time_and_is_not_turned(mode: str, fmt: str) -> None:
    """MegaDetector converts L/RGBA to RGB before reading the orientation (the copy has no ``_getexif``: not turned)
    but reads the time with ``getexif`` from that copy, which keeps the EXIF: a time, no turn, on both paths.
    Before, the CPU path lost the time of every grayscale night frame and the GPU path turned grayscale JPEGs."""
    from gpu_batch.worker.devices import gpu_decodable_jpeg

    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = "2024:05:02 21:59:58"
    exif[274] = 6
    buf = io.BytesIO()
    textured(120, 80, 3).convert(mode).save(buf, format=fmt, exif=exif.tobytes())
    pixels, captured = decode_image_and_time(buf.getvalue())
    assert (pixels.shape, captured) == ((80, 120, 3), CaptureTime("2024:05:02 21:59:58"))
    if fmt == "JPEG":
        assert gpu_decodable_jpeg(buf.getvalue()) == (80, 120, 0, CaptureTime("2024:05:02 21:59:58"))


@pytest.mark.parametrize(("offsets", "ifd0", "want"), [
    ({0x9011: "+02:00", 0x9010: "+01:00"}, {}, (("OffsetTimeOriginal", "+02:00"), ("OffsetTime", "+01:00"))),
    ({0x9010: "-05:30"}, {}, (("OffsetTime", "-05:30"),)),  # only the camera's OffsetTime: kept, the fallback
    # OffsetTimeDigitized (0x9012), DateTimeDigitized's, which a camera writes equal to DateTimeOriginal: read too,
    # and before OffsetTime (DateTime's, the file's last change, which editing software rewrites)
    ({0x9012: "+02:00", 0x9010: "+01:00"}, {}, (("OffsetTimeDigitized", "+02:00"), ("OffsetTime", "+01:00"))),
    ({0x9011: "+03:00", 0x9012: "+02:00"}, {0x9012: "+04:00"},
     (("OffsetTimeOriginal", "+03:00"), ("OffsetTimeDigitized", "+04:00"))),
    ({0x9011: "      "}, {}, ()),  # a camera that writes blanks: nothing (MegaDetector's would be "")
    ({0x9011: "+02:00"}, {0x9011: "+03:00"}, (("OffsetTimeOriginal", "+03:00"),)),  # IFD0's first, as read_pil_exif
    ({}, {}, ())])
def test_the_photos_exif_offsets_come_with_its_capture_time_on_both_decode_paths(
        offsets: dict[int, str], ifd0: dict[int, str], want: tuple[tuple[str, str], ...]) -> None:
    """A real JPEG carrying EXIF 2.31 ``OffsetTimeOriginal`` / ``OffsetTimeDigitized`` / ``OffsetTime`` (written by
    PIL's ``Image.Exif``): the worker's EXIF reading (``image_capture_time``, from the CPU decode and from the header
    the GPU paths read) gives the time and the photo's own offsets, which the worker writes as MegaDetector's
    ``exif_metadata`` (``results.detections_entry``), and which the Camtrap DP export puts over the task's
    ``utc_offset``. Before, the offsets were never read: a camera set to UTC+2 in a task without a zone was written as
    UTC, two hours late."""
    from gpu_batch.worker.devices import gpu_decodable_jpeg
    from gpu_batch.worker.results import detections_entry

    data = _dated("2024:05:02 09:59:58", offsets=offsets, ifd0_offsets=ifd0)
    captured = decode_image_and_time(data)[1]
    assert captured == CaptureTime("2024:05:02 09:59:58", want)
    assert gpu_decodable_jpeg(data) == (80, 120, 0, captured)
    entry = detections_entry("cam/a.jpg", [], 120, 80, captured=captured)
    assert entry.get("exif_metadata") == (dict(want) or None)
    builder = camtrapdp.CamtrapBuilder(0.2, {"1": "animal"}, "2024-06-01T00:00:00Z", "MDv5a")
    media, _ = builder.add(entry)
    tags = dict(want)
    own = tags.get("OffsetTimeOriginal") or tags.get("OffsetTimeDigitized") or tags.get("OffsetTime") or "+00:00"
    assert media[3] == "2024-05-02T09:59:58" + own
    assert bool(builder.deployments["cam"].timestamp_issues & camtrapdp.ZONE_ASSUMED) == (not want)


def test_grayscale_becomes_rgb_and_truncated_jpeg_decodes() -> None:
    assert decode_image(jpeg_bytes(textured(64, 48, 1).convert("L"))).shape == (48, 64, 3)
    assert decode_image(jpeg_bytes(textured(800, 600, 2))[:9000]).shape == (600, 800, 3)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    with pytest.raises(ImageAccessError, match="DecompressionBomb"):
        decode_image(_png_header_only(20000, 20000))


def test_letterbox_matches_yolov5_geometry() -> None:
    g = letterbox_geometry(1536, 2048, 1280, 64)
    assert (g.new_h, g.new_w, g.padded_shape) == (960, 1280, (960, 1280))
    g = letterbox_geometry(701, 1001, 1280, 64)
    assert g.padded_shape[0] % 64 == 0 and g.padded_shape[1] == 1280 and g.top + g.bottom == g.padded_shape[0] - g.new_h
    boxed, g = letterbox_cpu(np.zeros((333, 777, 3), np.uint8), 1280, 64)
    assert boxed.shape[:2] == g.padded_shape and boxed[0, 0, 0] == 114


def test_batched_letterbox_equals_per_image_letterbox() -> None:
    import torch

    from gpu_batch.worker.preprocess import letterbox_geometry, letterbox_torch, letterbox_torch_batch

    gen = torch.Generator().manual_seed(3)
    for h, w in ((1536, 2048), (600, 800), (1280, 960), (333, 1001)):
        images = [torch.randint(0, 256, (h, w, 3), generator=gen, dtype=torch.uint8) for _ in range(3)]
        g = letterbox_geometry(h, w, 1280, 64)
        batch = letterbox_torch_batch(images, g)
        assert batch.shape == (3, 3, *g.padded_shape)
        for i, image in enumerate(images):
            assert torch.equal(batch[i], letterbox_torch(image, g))
