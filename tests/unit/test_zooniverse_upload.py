"""`trapbatch zooniverse`'s pure parts: fitting a photo under Zooniverse's size limit, reading a manifest's photos as
the Panoptes CLI does, the upload command, and which manifests a task's results answer names."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from cli.errors import CliError
from cli.zooniverse_upload import MAX_BYTES, Unfittable, fit, manifest_photos, manifests, upload_command


def noisy(width: int, height: int, fmt: str = "JPEG", orientation: int | None = None, **save: Any) -> bytes:
    """A photo that compresses badly, as camera-trap photos of grass and leaves do."""
    rng = random.Random(width * height)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    out = io.BytesIO()
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif
    image.save(out, fmt, **save)
    return out.getvalue()


def test_a_photo_within_the_limit_is_written_as_it_is() -> None:
    data = noisy(200, 150)
    assert fit(data, len(data)) is data


def test_a_larger_jpeg_is_scaled_down_to_fit_keeping_its_shape_and_format() -> None:
    data = noisy(1600, 1200, quality=95)
    limit = len(data) // 5
    fitted = fit(data, limit)
    assert len(fitted) <= limit
    with Image.open(io.BytesIO(fitted)) as small:
        assert small.format == "JPEG" and small.width < 1600
        assert abs(small.width / small.height - 4 / 3) < 0.01
        assert not small.getexif()  # no EXIF block: no camera position reaches the volunteers


def test_the_default_limit_is_under_both_zooniverse_limits() -> None:
    """The Panoptes CLI refuses files over 1024 * 1024 bytes (panoptes-cli commands/subject_set.py); the Project
    Builder over 1,000 KB."""
    assert MAX_BYTES <= min(1024 * 1024, 1000 * 1000)
    data = noisy(2400, 1800, quality=95)
    assert len(data) > MAX_BYTES and len(fit(data)) <= MAX_BYTES


def test_a_shrunk_photo_is_turned_upright_by_its_exif_orientation() -> None:
    """The copy carries no EXIF, so the orientation tag must be applied to the pixels or the photo shows sideways."""
    data = noisy(1200, 800, orientation=6, quality=95)  # 6: rotate 90 degrees to view
    with Image.open(io.BytesIO(fit(data, len(data) // 3))) as small:
        assert small.height > small.width


def test_a_png_stays_a_png() -> None:
    data = noisy(600, 400, "PNG")
    fitted = fit(data, len(data) // 3)
    assert len(fitted) <= len(data) // 3
    with Image.open(io.BytesIO(fitted)) as small:
        assert small.format == "PNG"


def test_a_file_that_is_no_photo_cannot_be_fitted() -> None:
    with pytest.raises(Unfittable, match="cannot be decoded"):
        fit(b"\xff\xd8 not really a jpeg" * 100, 100)


def test_a_photo_that_fits_at_no_size_is_refused_not_shrunk_to_nothing() -> None:
    data = noisy(800, 600, quality=95)
    with pytest.raises(Unfittable, match="does not fit in 200 bytes .the smallest tried: [0-9]+x[0-9]+ pixels"):
        fit(data, 200)


def test_a_manifests_photos_are_its_image_columns_cells_once_each() -> None:
    """Captures and visits manifests have image_name_1..N, a shorter capture's last cells empty; ``#file`` and
    ``folder`` are not photos."""
    text = ("image_name_1,image_name_2,image_name_3,folder,#file,#capture_id\r\n"
            "cam/a.jpg,cam/b.jpg,cam/c.jpg,cam,cam/a.jpg,e1\r\n"
            "cam/d.jpg,,,cam,cam/d.jpg,e2\r\n"
            "\"cam/with, comma.jpg\",cam/a.jpg,,cam,x,e3\r\n")
    columns, photos = manifest_photos(text)
    assert columns == [0, 1, 2]
    assert photos == ["cam/a.jpg", "cam/b.jpg", "cam/c.jpg", "cam/d.jpg", "cam/with, comma.jpg"]
    with pytest.raises(CliError, match="no image_name_1"):
        manifest_photos("file,folder\r\na.jpg,\r\n")


def test_the_upload_command_names_the_image_columns() -> None:
    """Without -f the Panoptes CLI takes every cell that is an existing path as a file (``folder`` too)."""
    assert upload_command(Path("t/exports/zooniverse/batch-001.csv"), [0]) == (
        "panoptes subject-set upload-subjects -f 1 <subject set id> t/exports/zooniverse/batch-001.csv")
    assert upload_command(Path("b.csv"), [0, 1, 2]).startswith(
        "panoptes subject-set upload-subjects -f 1 -f 2 -f 3 -M ")


def _answer(variants: tuple[str, ...]) -> dict[str, Any]:
    files = {}
    for v in variants:
        base = "results/task-1/exports/" + ("" if v == "original" else f"{v}/")
        files[v] = {"results": "results/task-1/detections.json",
                    "exports": {"coco.json": base + "coco.json",
                                **{f"zooniverse/batch-00{b}.csv": f"{base}zooniverse/batch-00{b}.csv"
                                   for b in (1, 2)}}}
    return {"results": {"container": "trapbatch", "blob": "results/task-1/detections.json", "files": files},
            "source": {"container": "cams", "account_url": ""}}


def test_the_manifests_are_the_repeats_removed_ones_when_there_are_any() -> None:
    variant, found = manifests(_answer(("original", "repeats-removed")), {}, None)
    assert variant == "repeats-removed"
    assert [path for _, _, path in found] == ["exports/repeats-removed/zooniverse/batch-001.csv",
                                               "exports/repeats-removed/zooniverse/batch-002.csv"]
    variant, found = manifests(_answer(("original", "repeats-removed")), {}, "original", [2])
    assert (variant, [path for _, _, path in found]) == ("original", ["exports/zooniverse/batch-002.csv"])
    assert manifests(_answer(("original",)), {}, None)[0] == "original"
    with pytest.raises(CliError, match="no repeats-removed results"):
        manifests(_answer(("original",)), {}, "repeats-removed")
    with pytest.raises(CliError, match="numbered 7"):
        manifests(_answer(("original",)), {}, None, [7])
