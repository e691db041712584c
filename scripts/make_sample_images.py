"""Regenerate the bundled demo images under samples/images (committed; run only to change them).

Synthetic camera-trap-like frames (textured ground, vegetation, a few blobby "animals"), in nested camera/day folders,
plus the awkward cases a real card dump contains: a corrupt file, a truncated JPEG, a PNG, a grayscale IR frame, an EXIF-rotated frame.
The camera frames carry a make, a model and a capture time in their EXIF, as trail cameras write them; the IR frame,
the PNG and the casualties carry none (a camera whose clock was never read), so the exports show both.
Deterministic (seeded) so the committed files do not churn.
"""
from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

OUT = Path(__file__).resolve().parent.parent / "samples" / "images"


def scene(rng: random.Random, w: int = 640, h: int = 480) -> Image.Image:
    im = Image.new("RGB", (w, h), (rng.randint(60, 110), rng.randint(80, 120), rng.randint(40, 80)))
    d = ImageDraw.Draw(im)
    for _ in range(400):
        x, y = rng.randint(0, w), rng.randint(0, h)
        c = (rng.randint(30, 140), rng.randint(60, 160), rng.randint(20, 90))
        d.ellipse([x, y, x + rng.randint(3, 30), y + rng.randint(3, 30)], fill=c)
    for _ in range(rng.randint(0, 3)):
        x, y = rng.randint(40, w - 160), rng.randint(h // 3, h - 100)
        body = (rng.randint(90, 160), rng.randint(60, 110), rng.randint(30, 70))
        d.ellipse([x, y, x + rng.randint(80, 150), y + rng.randint(40, 70)], fill=body)
        d.ellipse([x - 25, y - 15, x + 25, y + 25], fill=body)
    return im.filter(ImageFilter.GaussianBlur(0.8))


def camera_exif(day: str, seconds: int, orientation: int | None = None) -> Image.Exif:
    """What a trail camera writes: make, model and the capture time (DateTimeOriginal, in the Exif IFD), which the
    worker reads into the results' ``datetime`` and the exports' capture times."""
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "trapbatch", "synthetic trail camera"  # Make, Model
    if orientation is not None:
        exif[0x0112] = orientation  # Orientation: 6 = rotate 90 CW on display
    clock = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    exif.get_ifd(0x8769)[0x9003] = f"{day.replace('-', ':')} {clock}"  # DateTimeOriginal
    return exif


def main() -> None:
    rng = random.Random(20261122)
    OUT.mkdir(parents=True, exist_ok=True)
    n = 0
    for cam in ("camera-01", "camera-02", "camera-03"):
        for day in ("2024-06-01", "2024-06-02"):
            folder = OUT / cam / day
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(6):
                # a burst of three every twenty minutes from dawn, as a motion trigger would take them
                at = 6 * 3600 + (i // 3) * 1200 + (i % 3)
                exif = camera_exif(day, at)
                scene(rng).save(folder / f"IMG_{i + 1:04d}.JPG", "JPEG", quality=85, exif=exif)
                n += 1
    ir = scene(rng).convert("L")
    ir.save(OUT / "camera-03" / "2024-06-02" / "IMG_0099_night.jpg", "JPEG", quality=85)
    scene(rng).save(OUT / "camera-02" / "2024-06-01" / "snapshot.png", "PNG")
    rotated = scene(rng, 480, 640)
    rotated.save(OUT / "camera-01" / "2024-06-02" / "IMG_0100_rotated.jpg", "JPEG", quality=85,
                 exif=camera_exif("2024-06-02", 19 * 3600 + 5 * 60, orientation=6))
    # A card-reader casualty: a JPEG start-of-image marker followed by garbage. (A merely *truncated* JPEG is not a
    # failure: MegaDetector decodes what it can, gray-filling the rest, and so does the worker.)
    garbage = bytes(rng.randrange(256) for _ in range(20_000))
    (OUT / "camera-01" / "2024-06-01" / "IMG_0007_corrupt.JPG").write_bytes(b"\xff\xd8\xff\xe0" + garbage)
    buf = io.BytesIO()
    scene(rng).save(buf, "JPEG", quality=85)
    (OUT / "camera-02" / "2024-06-02" / "IMG_0008_truncated.JPG").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (OUT / "camera-02" / "2024-06-02" / "notes.txt").write_text("field notes: battery swapped\n")
    print(f"wrote {n + 5} images (+1 non-image) under {OUT}")


if __name__ == "__main__":
    main()
