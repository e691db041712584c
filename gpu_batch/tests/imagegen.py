"""Synthetic test images: smooth textures with shapes, in varied sizes (no real photos are needed)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def textured(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy = rng.uniform(10, 60, size=2)
    r = np.sin(xx / fx) * 80 + 128
    g = np.cos(yy / fy) * 80 + 128
    b = ((xx + yy) * rng.uniform(0.1, 0.5)) % 256
    img = np.stack([r, g, b], -1)
    for _ in range(6):  # a few bright/dark blobs, object-like
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        rad = rng.uniform(0.05, 0.2) * min(width, height)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 < rad ** 2
        img[mask] = rng.uniform(0, 255, size=3)
    img += rng.normal(0, 8, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg_bytes(image: Image.Image, quality: int = 90, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality, **kwargs)
    return buf.getvalue()


ORACLE_SIZES = [(1280, 960), (2048, 1536), (640, 480), (1000, 700), (1001, 701), (480, 640), (300, 300),
                (1920, 1080), (777, 333), (64, 48)]


def write_oracle_set(folder: Path) -> list[str]:
    """~10 JPEGs of varied sizes and aspect ratios; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (w, h) in enumerate(ORACLE_SIZES):
        name = f"img_{i:02d}_{w}x{h}.jpg"
        (folder / name).write_bytes(jpeg_bytes(textured(w, h, seed=100 + i)))
        names.append(name)
    return names
