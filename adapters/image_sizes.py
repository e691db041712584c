"""Image sizes from the first bytes of each image blob, for exports that need pixels (COCO's boxes): the FALLBACK.

The worker writes each image's ``width``/``height`` into its entry (as MegaDetector does with
``--include_image_size``), and the exports use those and call this only for entries without them: results written
before the worker wrote sizes, older entries a re-run reused, or results made elsewhere.

Why: MegaDetector's results give boxes relative to the image and carry no sizes by default, and MegaDetector's
``md_to_coco`` reads each image to get them. Reading whole images would move terabytes for a large task; an image's size (and its
EXIF orientation) sits in its first bytes, so one ranged read (``HEADER_BYTES``) per image is enough, with the whole
blob read only when the header is not (a JPEG whose EXIF block is unusually large). Sizes are as MegaDetector's
``visualization_utils.open_image`` sees them: an EXIF orientation of 6 or 8 (90-degree turns) swaps width and height,
since the detector ran on the turned image; mirrored orientations, and grayscale or RGBA images (converted to RGB
first), are not turned (MegaDetector does not turn them either).

Must not: hold more than ``batch`` images' headers at a time; fail the export for one unreadable image (its size is
None).
"""
from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, TypeVar

from azure.core.exceptions import AzureError

from adapters.blobs import BlobStore
from gpu_batch.manifest import has_dot_segment

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)
T = TypeVar("T")

HEADER_BYTES = 128 * 1024  # a JPEG's APP1 (EXIF) segment is at most 64 KiB; the frame header follows it
# EXIF orientation -> degrees MegaDetector turns the image (PIL's ``rotate``, counter-clockwise;
# visualization_utils.EXIF_IMAGE_ROTATIONS, gpu_batch.worker.preprocess._EXIF_ROTATIONS): mirrored ones are not turned
DETECTOR_ROTATIONS = {3: 180, 6: 270, 8: 90}
_CONVERTED_FIRST = ("L", "RGBA")  # modes visualization_utils.open_image converts before reading the orientation


def detector_rotation(im: Image.Image) -> int:
    """Degrees (counter-clockwise, as ``Image.rotate``) the detector turned this opened image by: 0, 90, 180 or 270.

    Why not ``ImageOps.exif_transpose``: MegaDetector (and the worker, ``gpu_batch.worker.preprocess``) applies only
    the turns 3/6/8, never the mirrored orientations, and converts grayscale and RGBA images to RGB before it reads
    the orientation, from a copy without ``_getexif``: those are never turned. The boxes are relative to the image it
    saw, so anything drawing them (the preview's thumbnails) or sizing them (COCO) must turn it the same way."""
    if im.mode in _CONVERTED_FIRST:
        return 0
    try:
        return DETECTOR_ROTATIONS.get(im._getexif().get(274), 0)  # type: ignore[attr-defined]  # as MegaDetector
    except Exception:  # noqa: BLE001 - no EXIF, or a format without ``_getexif``: MegaDetector does not turn it
        return 0


def size_from_bytes(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` as MegaDetector sees the image, from its first bytes or all of them; None if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            turned = detector_rotation(im) in (90, 270)  # as the worker turned it before sizing the boxes
    except Exception:  # a truncated header or an undecodable file
        return None
    return (height, width) if turned else (width, height)


def _size(store: BlobStore, container: str, name: str) -> tuple[int, int] | None:
    if has_dot_segment(name):  # the HTTP layer would read another blob's size (gpu_batch.manifest.has_dot_segment)
        return None
    client = store.service.get_blob_client(container, name)
    try:
        head = bytes(client.download_blob(offset=0, length=HEADER_BYTES).readall())
        size = size_from_bytes(head)
        if size is None and len(head) == HEADER_BYTES:
            size = size_from_bytes(bytes(client.download_blob().readall()))
    except AzureError as exc:
        logger.warning("image size of %s/%s unreadable: %s", container, name, type(exc).__name__)
        return None
    return size


def with_sizes(store: BlobStore, container: str, items: Iterable[T], name_of: Callable[[T], str | None],
               threads: int = 16, batch: int = 512) -> Iterator[tuple[T, tuple[int, int] | None]]:
    """``(item, size)`` for each item, in order: the size of the image ``name_of(item)`` names (None: no read, no
    size), reading ``threads`` headers at once and at most ``batch`` items ahead."""
    def sized(chunk: list[T], pool: ThreadPoolExecutor) -> Iterator[tuple[T, tuple[int, int] | None]]:
        names = [name_of(item) for item in chunk]
        reads = iter(pool.map(lambda n: _size(store, container, n), [n for n in names if n is not None]))
        return ((item, None if name is None else next(reads)) for item, name in zip(chunk, names))

    pending: list[T] = []
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for item in items:
            pending.append(item)
            if len(pending) >= batch:
                yield from sized(pending, pool)
                pending = []
        if pending:
            yield from sized(pending, pool)
