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
None, and why is recorded in ``SizeMisses``: a bare count of images whose COCO boxes stayed relative said neither why
nor what to do, and the log line alone reached no one).
"""
from __future__ import annotations

import bisect
import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, TypeVar

from azure.core.exceptions import AzureError, ResourceNotFoundError

from adapters.blobs import BlobStore
from adapters.storage_errors import storage_error
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


# Why an image's size is unknown (``SizeMisses``; the exports' ``sizes_unknown_why.reasons``)
SIZE_NOT_READ = "not_read"  # no read was asked for (TRAPBATCH_EXPORT_IMAGE_SIZES off)
SIZE_NOT_FOUND = "not_found"  # deleted or renamed since detection
SIZE_UNREADABLE = "unreadable"  # storage refused or failed the read (the app's identity, a SAS, an outage)
SIZE_UNDECODABLE = "undecodable"  # its bytes do not give an image's size
SIZE_UNSAFE_NAME = "unsafe_name"  # a name with "." or ".." folders: never read (it would read another blob)
MISS_EXAMPLES = 3  # names kept: the first few by name, whatever order the reading threads finish in


class SizeMisses:
    """Why images' sizes could not be read: a count per reason (``SIZE_*``), the first ``MISS_EXAMPLES`` names (by
    name, so the same images give the same examples whatever the threads' order) and the first storage error (by
    name), in the storage map's words (``adapters.storage_errors``: never the request's URL, which may hold a SAS).
    Thread-safe: the reads run in a pool. ``to_dict`` is what an exports part records; ``combine`` joins the parts'
    records."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}
        self.examples: list[str] = []
        self.error = ""
        self._error_of = ""
        self._lock = threading.Lock()

    def add(self, name: str, why: str, error: str = "") -> None:
        with self._lock:
            self.reasons[why] = self.reasons.get(why, 0) + 1
            if len(self.examples) < MISS_EXAMPLES or name < self.examples[-1]:
                bisect.insort(self.examples, name)
                del self.examples[MISS_EXAMPLES:]
            if error and (not self.error or name < self._error_of):
                self.error, self._error_of = f"{name}: {error}", name

    def to_dict(self) -> dict[str, Any] | None:
        """``{"reasons": ..., "examples": ..., "error": ...}`` (no ``error`` when none was said); None: no miss."""
        if not self.reasons:
            return None
        out: dict[str, Any] = {"reasons": dict(sorted(self.reasons.items())), "examples": list(self.examples)}
        if self.error:
            out["error"] = self.error
        return out

    @staticmethod
    def combine(records: Iterable[Mapping[str, Any] | None]) -> dict[str, Any] | None:
        """Several ``to_dict`` records (None: a part without misses, or recorded before they were kept) as one: the
        counts summed, the first examples by name, the first part's error."""
        reasons: dict[str, int] = {}
        examples: list[str] = []
        error = ""
        for record in records:
            if not record:
                continue
            for why, n in (record.get("reasons") or {}).items():
                reasons[why] = reasons.get(why, 0) + int(n)
            examples = sorted({*examples, *(record.get("examples") or [])})[:MISS_EXAMPLES]
            error = error or str(record.get("error") or "")
        if not reasons:
            return None
        out: dict[str, Any] = {"reasons": dict(sorted(reasons.items())), "examples": examples}
        if error:
            out["error"] = error
        return out


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


def _size(store: BlobStore, container: str, name: str,
          misses: SizeMisses | None = None) -> tuple[int, int] | None:
    if has_dot_segment(name):  # the HTTP layer would read another blob's size (gpu_batch.manifest.has_dot_segment)
        if misses is not None:
            misses.add(name, SIZE_UNSAFE_NAME)
        return None
    client = store.service.get_blob_client(container, name)
    try:
        head = bytes(client.download_blob(offset=0, length=HEADER_BYTES).readall())
        size = size_from_bytes(head)
        if size is None and len(head) == HEADER_BYTES:
            size = size_from_bytes(bytes(client.download_blob().readall()))
    except AzureError as exc:
        said = storage_error(exc).message  # the storage map's words and error code: never the URL (a SAS)
        logger.warning("image size of %s/%s unreadable: %s", container, name, said)
        if misses is not None:
            misses.add(name, SIZE_NOT_FOUND if isinstance(exc, ResourceNotFoundError) else SIZE_UNREADABLE, said)
        return None
    if size is None and misses is not None:
        misses.add(name, SIZE_UNDECODABLE)
    return size


def with_sizes(store: BlobStore, container: str, items: Iterable[T], name_of: Callable[[T], str | None],
               threads: int = 16, batch: int = 512,
               misses: SizeMisses | None = None) -> Iterator[tuple[T, tuple[int, int] | None]]:
    """``(item, size)`` for each item, in order: the size of the image ``name_of(item)`` names (None: no read, no
    size), reading ``threads`` headers at once and at most ``batch`` items ahead; each read that gave no size is
    recorded in ``misses`` with why."""
    def sized(chunk: list[T], pool: ThreadPoolExecutor) -> Iterator[tuple[T, tuple[int, int] | None]]:
        names = [name_of(item) for item in chunk]
        reads = iter(pool.map(lambda n: _size(store, container, n, misses), [n for n in names if n is not None]))
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
