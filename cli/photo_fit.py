"""A camera-trap photo made fit for Zooniverse: within a byte limit, optionally a pixel limit, in a format it takes,
without the metadata that would tell volunteers where the camera stands.

Why each rule:

* Size: the Panoptes CLI refuses a file over 1 MiB (panoptes-cli ``commands/subject_set.py``,
  ``MAX_UPLOAD_FILE_SIZE``) and the Project Builder one over 1,000 KB; camera-trap photos are mostly 2-6 MB. A
  larger photo is scaled down, its aspect kept, until its encoding fits, aiming close to the limit (two tries upward
  after the first fit) so no more detail is lost than the limit asks.
* Pixels (``max_side``, optional): the manual workflow's upload compressed every photo to 1,440 pixels on its longer
  side by default (../shared/reference/seeds/001, "Image Compression Options"): smaller files upload faster and
  volunteers' screens show no more.
* Format: panoptes-client takes the type from the file's bytes (``magic.from_buffer``), not its name, and allows
  JPEG, PNG and GIF images; a photo in another format under a ``.jpg`` name (WebP, TIFF) is written as a JPEG. A
  JPEG that Pillow reads as MPO (one with an MPF segment, from many consumer cameras) is a JPEG for these rules.
* Metadata: EXIF and XMP (APP1) and IPTC (APP13) can hold the camera's GPS position, which for rare species is what
  poachers look for; unless ``keep_metadata``, a JPEG's are removed without decoding its pixels (the rest of the file
  byte for byte), and a photo that must be decoded anyway is written without them. A photo whose EXIF orientation
  turns it is decoded and written upright, since removing the tag would show it sideways. The ICC colour profile is
  kept (it is no position, and the colours depend on it).

Must not: do I/O (the caller fetches and writes).
"""
from __future__ import annotations

import io
import math
import struct
from typing import Any

ZOONIVERSE_FORMATS = ("JPEG", "PNG", "GIF")
JPEG_QUALITY = 85
MIN_SIDE = 64  # no photo is shrunk below this many pixels on its longer side: something else is wrong then
FIT_ATTEMPTS = 8
UPWARD_TRIES = 2
COPIED, SHRUNK, REENCODED = "copied", "shrunk", "re-encoded"
# JPEG markers whose segments may hold a position: APP1 (EXIF, XMP), APP13 (Photoshop IRB with IPTC), COM (text)
_PRIVATE_MARKERS = (0xE1, 0xED, 0xFE)
# PNG chunks that may: eXIf, and the text chunks (XMP travels in iTXt)
_PRIVATE_CHUNKS = (b"eXIf", b"tEXt", b"zTXt", b"iTXt")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: markers without a length


class Unfittable(ValueError):
    """A photo that cannot be decoded, or not shrunk under the limit."""


def fit(data: bytes, max_bytes: int, max_side: int | None = None, keep_metadata: bool = False) -> tuple[bytes, str]:
    """(the photo's bytes for Zooniverse, what was done: ``COPIED`` (as it is, or a JPEG with its position-bearing
    segments removed), ``SHRUNK`` (scaled down) or ``REENCODED`` (decoded and written again at its size: another
    format, or turned upright)). ``Unfittable`` when it cannot be decoded or does not fit at ``MIN_SIDE`` pixels."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:  # the header only: cheap
            fmt = "JPEG" if opened.format == "MPO" else str(opened.format)
            longer = max(opened.size)
            orientation = _orientation(opened)
            mpo = opened.format == "MPO"
            private = any(key in opened.info for key in PRIVATE_INFO)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise Unfittable(f"cannot be decoded: {exc}") from None
    too_large = len(data) > max_bytes or (max_side is not None and longer > max_side)
    turned = orientation not in (None, 1) and not keep_metadata
    if not too_large and not turned and fmt in ZOONIVERSE_FORMATS and not mpo:
        if keep_metadata:
            return data, COPIED
        # a GIF's comment or XMP: written again without them
        stripped = (strip_jpeg_metadata(data) if fmt == "JPEG" else strip_png_metadata(data) if fmt == "PNG"
                    else None if private else data)
        if stripped is not None:
            return stripped, COPIED
    return _encode(data, fmt, max_bytes, max_side, keep_metadata)


# what Pillow's ``info`` holds of a file's metadata that may tell where a camera stands
PRIVATE_INFO = ("exif", "xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc")
# Pillow writes these of ``info`` again when it saves (a JPEG's comment, a PNG's text): dropped unless kept
_CARRIED_INFO = ("comment", "xmp", "XML:com.adobe.xmp")
# what each EXIF orientation does to the stored pixels to show them (EXIF 2.32, tag 0x0112), as Pillow's transposes
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def _orientation(image: Any) -> int | None:
    """The EXIF orientation, or None when there is none or the EXIF cannot be read (camera firmware writes odd
    blocks: Pillow raises TypeError or struct.error on some)."""
    try:
        value = image.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - any failure of the EXIF parser means "no orientation we can trust"
        return None
    return value if isinstance(value, int) else None


def _upright(opened: Any, keep_metadata: bool) -> tuple[Any, bytes | None]:
    """(the decoded image turned as its EXIF orientation says, the EXIF to write with it when ``keep_metadata``:
    its own with the orientation removed so no viewer turns it twice, None when it cannot be written again)."""
    from PIL import Image, ImageOps

    try:
        image = ImageOps.exif_transpose(opened)
        image.load()
        return image, (image.getexif().tobytes() if keep_metadata and "exif" in opened.info else None)
    except (OSError, SyntaxError, Image.DecompressionBombError):
        raise
    except Exception:  # noqa: BLE001 - Pillow's EXIF writer fails on some camera blocks: turn by the tag alone
        opened.load()
        method = _TRANSPOSE.get(_orientation(opened) or 1)
        image = opened.transpose(getattr(Image.Transpose, method)) if method else opened.copy()
        return image, None


def _encode(data: bytes, fmt: str, max_bytes: int, max_side: int | None, keep_metadata: bool) -> tuple[bytes, str]:
    """The photo decoded, upright, scaled to fit ``max_bytes`` and ``max_side``, in a format Zooniverse takes."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            icc = opened.info.get("icc_profile")
            xmp = opened.info.get("xmp") if keep_metadata else None
            image, exif = _upright(opened, keep_metadata)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise Unfittable(f"cannot be decoded: {exc}") from None
    if not keep_metadata:
        for key in _CARRIED_INFO:
            image.info.pop(key, None)
    out_format = fmt if fmt in ZOONIVERSE_FORMATS else "JPEG"
    if image.mode == "P" or (image.mode not in ("RGB", "L") and out_format == "JPEG"):
        image = image.convert("RGBA" if out_format != "JPEG" and image.mode == "P" else "RGB")
    options: dict[str, Any] = {"quality": JPEG_QUALITY} if out_format == "JPEG" else {}
    if icc and out_format in ("JPEG", "PNG"):
        options["icc_profile"] = icc
    if exif and out_format in ("JPEG", "PNG"):
        options["exif"] = exif
    if xmp and out_format == "JPEG":
        options["xmp"] = xmp
    width, height = image.size
    cap = min(1.0, max_side / max(width, height)) if max_side else 1.0
    floor = min(cap, MIN_SIDE / max(width, height))
    # a JPEG's size follows its pixel count: start from the share of pixels that the byte ratio suggests
    scale = max(floor, min(cap, math.sqrt(max_bytes / len(data)))) if len(data) > max_bytes else cap

    def encode(at: float) -> bytes:
        size = (max(1, round(width * at)), max(1, round(height * at)))
        small = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, out_format, **options)
        return buffer.getvalue()

    smallest = ""
    for _ in range(FIT_ATTEMPTS):
        encoded = encode(scale)
        if len(encoded) <= max_bytes:
            # well under the limit: up to two tries at a larger size (the estimate, then halfway), so no more detail
            # is lost than the limit asks
            high = min(cap, scale * math.sqrt(0.92 * max_bytes / len(encoded)))
            for _ in range(UPWARD_TRIES):
                if scale >= cap or len(encoded) >= 0.8 * max_bytes or high <= scale * 1.02:
                    break
                bigger = encode(high)
                if len(bigger) <= max_bytes:
                    encoded, scale = bigger, high
                    high = min(cap, scale * math.sqrt(0.92 * max_bytes / len(encoded)))
                else:
                    high = (scale + high) / 2
            return encoded, (SHRUNK if scale < 1.0 else REENCODED)
        smallest = f"{round(width * scale)}x{round(height * scale)} pixels: {len(encoded)} bytes"
        if scale <= floor:
            break
        scale = max(floor, scale * min(0.9, math.sqrt(max_bytes / len(encoded)) * 0.97))
    raise Unfittable(f"does not fit in {max_bytes} bytes (the smallest tried: {smallest}; none under {MIN_SIDE} "
                     "pixels is tried)")


def strip_png_metadata(data: bytes) -> bytes | None:
    """A PNG without its eXIf and text chunks, every other chunk byte for byte (each carries its own CRC); None when
    its chunks cannot be walked (then the caller decodes it)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, at = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, end = data[at + 4:at + 8], at + 12 + length
        if end > len(data):
            return None
        if kind not in _PRIVATE_CHUNKS:
            out.append(data[at:end])
        at = end
        if kind == b"IEND":
            return b"".join(out)
    return None


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """A JPEG without its APP1 (EXIF, XMP), APP13 (IPTC) and COM segments and whatever follows its end, every other
    byte as it was (the pixels are not decoded); None when the segments before the scan cannot be walked (then the
    caller decodes it)."""
    if data[:2] != b"\xff\xd8":
        return None
    out, at = [data[:2]], 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            out.append(data[at:at + 2])
            at += 2
            continue
        (length,) = struct.unpack(">H", data[at + 2:at + 4])
        if length < 2 or at + 2 + length > len(data):
            return None
        if marker == 0xDA:  # start of scan: the image data, kept whole up to its end (EOI: FF D9 occurs nowhere in
            # byte-stuffed scan data), not what a camera appended after it (a preview with its own EXIF)
            end = data.find(b"\xff\xd9", at)
            out.append(data[at:] if end < 0 else data[at:end + 2])
            return b"".join(out)
        if marker not in _PRIVATE_MARKERS:
            out.append(data[at:at + 2 + length])
        at += 2 + length
    return None
