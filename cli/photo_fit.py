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
* Metadata: EXIF and XMP (APP1), IPTC (APP13), Content Credentials (APP11, PNG ``caBX``) and comments can hold the
  camera's GPS position, which for rare species is what poachers look for; unless ``keep_metadata``, only what a
  viewer needs to show the pixels is kept of a JPEG, PNG or GIF (an allow-list, not a list of known carriers: a
  format gains new metadata blocks), without decoding its pixels (the rest of the file byte for byte), and a photo
  that must be decoded anyway is written without them. A photo whose EXIF orientation turns it is decoded and written
  upright, since removing the tag would show it sideways. The ICC colour profile is kept (it is no position, and the
  colours depend on it); a CMYK photo (some edited or scanned ones) is converted through its profile to sRGB.
* Pixels that are not 8-bit (16-bit or float TIFFs, thermal cameras) are scaled to 8 bits for a JPEG, not clipped
  (clipped, a 16-bit photo came out white). An animation (GIF, APNG) is copied as it is when it fits; one that must be
  decoded is refused with the reason, as a still of its first frame would silently stand for it.

Must not: do I/O (the caller fetches and writes).
"""
from __future__ import annotations

import io
import math
import re
import struct
from typing import Any

from gpu_batch.formats.jpeg_end import jpeg_cut_short

ZOONIVERSE_FORMATS = ("JPEG", "PNG", "GIF")
JPEG_QUALITY = 85
MIN_SIDE = 64  # no photo is shrunk below this many pixels on its longer side: something else is wrong then
FIT_ATTEMPTS = 8
UPWARD_TRIES = 2
COPIED, SHRUNK, REENCODED = "copied", "shrunk", "re-encoded"
# The JPEG application segments a viewer needs, by marker and how their data starts: JFIF/JFXX (APP0), the ICC
# profile (APP2) and Adobe's colour transform (APP14). Every other APPn (EXIF and XMP in APP1, FlashPix and MPF in
# APP2, C2PA in APP11, IPTC in APP13, ...) and every comment (COM) is dropped; the coding segments are kept.
_KEPT_APP = {0xE0: (b"JFIF\x00", b"JFXX\x00"), 0xE2: (b"ICC_PROFILE\x00",), 0xEE: (b"Adobe",)}
_COM = 0xFE
_EOI = b"\xff\xd9"
# The PNG chunks a viewer needs (the critical ones, colour, transparency, pixel size, animation); eXIf, the text
# chunks (XMP travels in iTXt), tIME, caBX (C2PA) and any other are dropped.
_KEPT_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
                          b"cICP", b"mDCv", b"cLLi", b"bKGD", b"hIST", b"pHYs", b"sPLT", b"acTL", b"fcTL", b"fdAT"})
# The GIF application extensions a viewer needs: looping (NETSCAPE2.0, ANIMEXTS1.0) and the ICC profile; comments
# and every other application extension (XMP DataXMP, ...) are dropped.
_KEPT_GIF_APPS = (b"NETSCAPE2.0", b"ANIMEXTS1.0", b"ICCRGBG1012")
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
            # animations only: a TIFF's pages (a thumbnail beside the photo) are no frames of one picture
            frames = int(getattr(opened, "n_frames", 1) or 1) if opened.format in ("GIF", "PNG", "WEBP") else 1
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise Unfittable(f"cannot be decoded: {_plain_error(exc)}") from None
    too_large = len(data) > max_bytes or (max_side is not None and longer > max_side)
    turned = orientation in _TRANSPOSE and not keep_metadata
    if not too_large and not turned and fmt in ZOONIVERSE_FORMATS and not mpo:
        if keep_metadata:
            return data, COPIED
        stripped = (strip_jpeg_metadata(data) if fmt == "JPEG" else strip_png_metadata(data) if fmt == "PNG"
                    else strip_gif_metadata(data))
        if stripped is not None:
            return stripped, COPIED
    if frames > 1:
        raise Unfittable(f"an animation of {frames} frames that must be "
                         + ("made smaller" if too_large else "turned upright" if turned else "written again")
                         + " (trapbatch zooniverse writes stills only: its first frame would stand for it): make it "
                         "fit yourself, or upload its frames as photos")
    return _encode(data, fmt, max_bytes, max_side, keep_metadata)


def _plain_error(exc: BaseException) -> str:
    """Pillow's message without the in-memory file's address it names (``<_io.BytesIO object at 0x...>``)."""
    return re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the file", str(exc))
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

    if fmt == "JPEG" and jpeg_cut_short(data):
        # a camera that lost power while writing: decoded as far as it goes, the rest gray, as the worker read it
        # (MegaDetector's LOAD_TRUNCATED_IMAGES), whatever Pillow's process-wide switch says here
        data += _EOI
    try:
        with Image.open(io.BytesIO(data)) as opened:
            icc = opened.info.get("icc_profile")
            image, exif = _upright(opened, keep_metadata)
            # after turning: exif_transpose also rewrites the orientation in the XMP, which viewers read too
            xmp = (image.info.get("xmp") or opened.info.get("xmp")) if keep_metadata else None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise Unfittable(f"cannot be decoded: {_plain_error(exc)}") from None
    if not keep_metadata:
        for key in _CARRIED_INFO:
            image.info.pop(key, None)
    out_format = fmt if fmt in ZOONIVERSE_FORMATS else "JPEG"
    if image.mode == "CMYK":
        image, icc = _cmyk_to_rgb(image, icc)
    if out_format == "JPEG" and (image.mode.startswith("I") or image.mode == "F"):
        image = _eight_bit(image)
    if image.mode == "P" or (image.mode not in ("RGB", "L") and out_format == "JPEG"):
        image = image.convert("RGBA" if out_format != "JPEG" and image.mode == "P" else "RGB")
    if icc and _icc_space(icc) not in _ICC_SPACES.get(image.mode, (_icc_space(icc),)):
        icc = None  # a profile of another colour space than the pixels written: a viewer would misread them
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


# the ICC header's colour space (bytes 16-19) each pixel mode may carry
_ICC_SPACES = {"RGB": (b"RGB ",), "RGBA": (b"RGB ",), "L": (b"GRAY",), "LA": (b"GRAY",), "CMYK": (b"CMYK",)}


def _icc_space(icc: bytes) -> bytes:
    return bytes(icc[16:20])


def _cmyk_to_rgb(image: Any, icc: bytes | None) -> tuple[Any, bytes | None]:
    """A CMYK photo as RGB: through its own profile to sRGB when it has one (Pillow's plain conversion ignores it and
    shifts the colours), with sRGB's profile to go with it; else Pillow's conversion, without a profile."""
    from PIL import ImageCms

    if icc and _icc_space(icc) == b"CMYK":
        try:
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            rgb = ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(icc)), srgb, outputMode="RGB")
            if rgb is not None:
                return rgb, srgb.tobytes()
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return image.convert("RGB"), None


def _eight_bit(image: Any) -> Any:
    """A 16-bit, 32-bit or float image as 8-bit grey, scaled rather than clipped: a 16-bit photo by its top byte,
    others from their darkest to their brightest value (a thermal camera's floats or counts)."""
    if image.mode.startswith("I;16"):
        return image.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    lo, hi = image.getextrema()
    if image.mode == "I" and 0 <= lo and hi <= 255:
        return image.convert("L")
    span = (hi - lo) or 1
    return image.point(lambda v: (v - lo) * (255 / span)).convert("L")


def strip_gif_metadata(data: bytes) -> bytes | None:
    """A GIF without its comments and application extensions other than ``_KEPT_GIF_APPS``, every other block byte
    for byte, every frame kept; None when its blocks cannot be walked (then the caller decodes it)."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return None
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    out = [data[:at]]

    def sub_blocks(start: int) -> int | None:
        """Where the sub-blocks from ``start`` end (after their 0 terminator), None when they run past the data."""
        while start < len(data):
            size = data[start]
            start += 1 + size
            if size == 0:
                return start
        return None

    while at < len(data):
        kind = data[at]
        if kind == 0x3B:  # trailer
            out.append(data[at:at + 1])
            return b"".join(out)
        if kind == 0x21 and at + 2 <= len(data):  # extension: label, then sub-blocks
            label = data[at + 1]
            end = sub_blocks(at + 2)
            if end is None:
                return None
            drop = label == 0xFE or (label == 0xFF and data[at + 3:at + 14] not in _KEPT_GIF_APPS)
            if not drop:
                out.append(data[at:end])
            at = end
            continue
        if kind == 0x2C and at + 10 <= len(data):  # image: descriptor, local colour table, LZW size, sub-blocks
            flags = data[at + 9]
            start = at + 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            end = sub_blocks(start)
            if end is None:
                return None
            out.append(data[at:end])
            at = end
            continue
        return None
    return None


def strip_png_metadata(data: bytes) -> bytes | None:
    """A PNG with only the chunks a viewer needs (``_KEPT_CHUNKS``), each byte for byte (each carries its own CRC);
    None when its chunks cannot be walked (then the caller decodes it)."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    out, at = [_PNG_SIGNATURE], len(_PNG_SIGNATURE)
    while at + 12 <= len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind, end = data[at + 4:at + 8], at + 12 + length
        if end > len(data):
            return None
        if kind in _KEPT_CHUNKS:
            out.append(data[at:end])
        at = end
        if kind == b"IEND":
            return b"".join(out)
    return None


def strip_jpeg_metadata(data: bytes) -> bytes | None:
    """A JPEG with only the application segments a viewer needs (``_KEPT_APP``), without comments and whatever
    follows its end, every other byte as it was (the pixels are not decoded), the segments between a progressive
    JPEG's scans walked as well; a JPEG cut short in a scan kept as far as it goes, with an end of image added; None
    when its segments cannot be walked (then the caller decodes it)."""
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
        if marker == 0xDA:  # start of scan: its header, then the entropy-coded data up to the next marker (an FF
            # that is neither byte stuffing, FF 00, nor a restart, FF D0-D7)
            end = _scan_end(data, at + 2 + length)
            if end is None:  # cut short in its scan (a camera that lost power): kept as far as it goes, and ended
                out.append(data[at:] + _EOI)  # so every viewer shows that much, as the worker read it
                return b"".join(out)
            out.append(data[at:end])
            if data[end + 1] == 0xD9:  # the end: kept, not what a camera appended after it (a preview with its EXIF)
                out.append(data[end:end + 2])
                return b"".join(out)
            at = end
            continue
        kept = _KEPT_APP.get(marker)
        if marker == _COM or (0xE0 <= marker <= 0xEF and (kept is None or not data[at + 4:at + 2 + length].startswith(
                kept))):
            at += 2 + length
            continue
        out.append(data[at:at + 2 + length])
        at += 2 + length
    return None


def _scan_end(data: bytes, at: int) -> int | None:
    """Where the marker after a scan's entropy-coded data from ``at`` starts, None when the file ends first."""
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 1 >= len(data):
            return None
        following = data[at + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7 or following == 0xFF:
            at += 1
            continue
        return at
