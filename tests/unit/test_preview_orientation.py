"""The preview's thumbnails are turned as the detector turned the image, so the boxes land where the detector saw them.

MegaDetector (and the worker, ``gpu_batch.worker.preprocess.decode_image``) applies only the EXIF turns 3/6/8, never
the mirrored orientations, and never turns a grayscale or RGBA photo (converted to RGB before the orientation is
read). ``ImageOps.exif_transpose`` applies them all: a thumbnail made with it showed a mirrored or turned grayscale
photo the detector never saw, with its boxes drawn in the wrong place.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from activities.previews import _renderings
from adapters.image_sizes import size_from_bytes

pytest.importorskip("torch")
from gpu_batch.worker.preprocess import decode_image  # noqa: E402 - needs torch


def _photo(mode: str, orientation: int | None) -> bytes:
    """A 400x200 photo, dark but for a bright top-left quarter, with an EXIF orientation."""
    im = Image.new("RGB", (400, 200), (20, 20, 20))
    im.paste((240, 240, 240), (0, 0, 200, 100))
    im = im.convert(mode)
    buf = io.BytesIO()
    exif = Image.Exif()
    if orientation is not None:
        exif[274] = orientation
    im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("orientation", [None, 1, 2, 3, 4, 5, 6, 7, 8])
def test_thumbnails_show_the_image_the_detector_saw(mode: str, orientation: int | None) -> None:
    data = _photo(mode, orientation)
    seen = decode_image(data)  # the worker's decode, MegaDetector's load_image
    made = _renderings(data)
    assert made is not None
    for rendering in made:
        with Image.open(io.BytesIO(rendering)) as im:
            shown = np.asarray(im.convert("L"), dtype=np.float32)
        h, w = seen.shape[:2]
        assert shown.shape[1] * h == pytest.approx(shown.shape[0] * w, rel=0.02), (shown.shape, seen.shape)
        expected = np.asarray(Image.fromarray(seen).convert("L").resize((shown.shape[1], shown.shape[0])),
                              dtype=np.float32)
        assert np.abs(shown - expected).mean() < 10, (mode, orientation)
    # and COCO's sizes come from the same rule
    assert size_from_bytes(data) == (seen.shape[1], seen.shape[0])
