"""The exports' fallback image size (``adapters.image_sizes.size_from_bytes``) is the size MegaDetector ran on."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from adapters.image_sizes import size_from_bytes


def _photo(mode: str, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[274] = orientation
    buf = io.BytesIO()
    Image.new(mode, (120, 80)).save(buf, format=fmt, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize(("mode", "fmt", "orientation", "size"), [
    ("RGB", "JPEG", 6, (80, 120)), ("RGB", "JPEG", 8, (80, 120)), ("RGB", "JPEG", 3, (120, 80)),
    ("RGB", "JPEG", 5, (120, 80)),  # mirrored: not turned
    # converted to RGB before MegaDetector reads the orientation: never turned (failed before the change)
    ("L", "JPEG", 6, (120, 80)), ("L", "JPEG", 8, (120, 80)), ("RGBA", "PNG", 6, (120, 80))])
def test_the_fallback_size_is_the_one_megadetector_ran_on(mode: str, fmt: str, orientation: int,
                                                          size: tuple[int, int]) -> None:
    assert size_from_bytes(_photo(mode, fmt, orientation)) == size
