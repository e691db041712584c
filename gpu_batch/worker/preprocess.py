"""Image decoding and letterboxing, matching MegaDetector v5's batch path bit for bit on CPU.

Why this module exists: to give the same answers as MegaDetector (``run_detector_batch`` with the default
``classic`` compatibility mode), an image must reach the network exactly as it does there:

* decoding = ``visualization_utils.load_image``: PIL, only modes RGB/RGBA/L/I;16 accepted (anything else, e.g. CMYK
  or palette, is an "image access failure"), RGBA/L converted to RGB, EXIF orientation 3/6/8 applied with
  ``rotate(expand=True)`` (mirrored orientations are ignored, as MegaDetector's assert-and-except does), truncated
  files loaded with gray fill (MegaDetector sets ``ImageFile.LOAD_TRUNCATED_IMAGES``), PIL's decompression-bomb limit
  left at its default (so images over ~179 MP fail);
* capture time = ``run_detector_batch``'s ``get_image_datetime`` (``--include_image_timestamp``): EXIF
  ``DateTimeOriginal`` (IFD0's before the Exif IFD's, stripped of spaces), when it parses as ``YYYY:MM:DD HH:MM:SS``,
  read with ``Image.getexif`` from the image ``load_image`` returns, so also for grayscale and RGBA images, whose
  conversion to RGB keeps their EXIF (but, in MegaDetector, skips their EXIF orientation); with it, the photo's own
  offset from UTC (EXIF 2.31 ``OffsetTimeOriginal``, ``OffsetTimeDigitized``, ``OffsetTime``) as
  ``--include_exif_tags`` writes them
  (``CaptureTime``);
* letterbox = YOLOv5's ``letterbox(img, 1280, stride=64, auto=True, scaleup=True)``: ``cv2.resize`` INTER_LINEAR to
  the long side, then minimal padding with value 114 to a multiple of the stride.

JPEG draft mode (DCT-domain downscaling) is not used: it changes pixel values, so outputs would differ from
MegaDetector's. On CUDA the resize runs on the GPU with torch's bilinear filter: close to, but not bit-identical
with, OpenCV's fixed-point INTER_LINEAR (the GPU oracle test allows for that).

Must not: know about models, storage, or result files.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np
import torch
from PIL import Image, ImageFile

from gpu_batch import manifest as contract

# As MegaDetector's visualization_utils does at import: decode what can be decoded of a truncated file.
ImageFile.LOAD_TRUNCATED_IMAGES = True

LETTERBOX_VALUE = 114
_ACCEPTED_MODES = ("RGBA", "RGB", "L", "I;16")
_EXIF_ORIENTATION = 274
_EXIF_ROTATIONS = {3: 180, 6: 270, 8: 90}
_EXIF_DATETIME_ORIGINAL = 36867  # normally in the Exif IFD; IFD0's wins where both have it (``image_capture_time``)
_EXIF_IFD = 0x8769
# EXIF 2.31's offsets from UTC ("+02:00"): of DateTimeOriginal; of DateTimeDigitized, which a camera writes equal to
# DateTimeOriginal (EXIF 2.32's DateTimeDigitized: when the image was stored as digital data, the same contents as
# DateTimeOriginal for a camera recording the file as it shoots), so the same clock; and of DateTime, the file's
# last change, which editing software rewrites (the last fallback)
_EXIF_OFFSET_TAGS = ((0x9011, "OffsetTimeOriginal"), (0x9012, "OffsetTimeDigitized"), (0x9010, "OffsetTime"))
_EXIF_TIME_FORMAT = "%Y:%m:%d %H:%M:%S"


# What Pillow raises for bad input, by its maintainers' own list: its fuzz test accepts exactly these from opening and
# decoding broken files (python-pillow/Pillow Tests/oss-fuzz/test_fuzzers.py: OSError, with UnidentifiedImageError
# and "image file is truncated"; SyntaxError, to which ``ImageFile`` turns a plugin's IndexError, TypeError, KeyError
# and struct.error while opening; ValueError, NotImplementedError, OverflowError; EOFError, which older releases let
# through). Raised while decoding, they say the file is bad: ``undecodable``, final. MemoryError, also on its list, is
# the node's as often as the file's: the worker tries it again (``devices.CpuStages.prepare``). Anything else raised
# while preparing an image is no bad file's doing (``manifest.REASON_WORKER_ERROR``).
BAD_FILE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, NotImplementedError,
                                                    OverflowError, EOFError)


class ImageAccessError(Exception):
    """The bytes are not an image MegaDetector would open (becomes ``failure: "image access failure"``).

    ``reason``: ``undecodable`` (not an image, corrupt, empty) or ``unsupported`` (an image MegaDetector refuses);
    both permanent: the same bytes fail the same way on every attempt.
    """

    def __init__(self, message: str, reason: str = contract.REASON_UNDECODABLE) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CaptureTime:
    """A photo's capture time as the worker writes it: MegaDetector's ``datetime`` and the photo's own offsets.

    ``datetime`` is EXIF ``DateTimeOriginal`` as ``--include_image_timestamp`` writes it (no zone: a camera's clock).
    ``offsets`` are the EXIF 2.31 offset tags the photo has, ``(("OffsetTimeOriginal", "+02:00"), ...)`` in that
    order, each as MegaDetector's ``run_detector_batch --include_exif_tags
    OffsetTimeOriginal,OffsetTimeDigitized,OffsetTime`` writes it in the entry's ``exif_metadata``
    (``read_exif.read_pil_exif``: the tag's name, its value as a stripped string, IFD0's before the Exif IFD's),
    empty values left out. Why those tags: they are the zone the camera
    itself says its clock was in, which the exports put over the image list's and the task's ``utc_offset``
    (``gpu_batch.formats.camtrapdp``). Read only with a ``datetime``: an offset without a time places nothing.
    """

    datetime: str
    offsets: tuple[tuple[str, str], ...] = ()


def image_capture_time(image: Image.Image) -> CaptureTime | None:
    """The capture time MegaDetector's ``get_image_datetime`` reads from ``image`` (``--include_image_timestamp``),
    with the photo's EXIF offsets from UTC (``CaptureTime``, ``image_offsets``).

    Why not ``exif_capture_time(image._getexif())``: MegaDetector reads ``image.getexif()`` through
    ``read_exif.read_pil_exif``, which exists on every PIL image, so a grayscale or RGBA photo converted to RGB (a
    plain ``Image`` without ``_getexif``) keeps its time there; ``_getexif`` lost it, and with it the capture times of
    grayscale night frames in the exports. ``read_pil_exif`` takes IFD0's ``DateTimeOriginal`` (as ``str``) before
    the Exif IFD's and strips strings, then ``get_image_datetime`` keeps the value that parses as
    ``YYYY:MM:DD HH:MM:SS`` (megadetector/data_management/read_exif.py, detection/run_detector_batch.py).
    """
    try:
        exif = image.getexif()
        value: Any = exif.get(_EXIF_DATETIME_ORIGINAL)
        if value is not None:
            value = str(value)
        else:
            value = exif.get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
            if isinstance(value, bytes):
                value = str(value)
        if isinstance(value, str):
            value = value.strip()
        when = exif_capture_time({_EXIF_DATETIME_ORIGINAL: value})
    except Exception:  # noqa: BLE001 - unreadable EXIF: no time, as MegaDetector's try/except gives
        return None
    return None if when is None else CaptureTime(when, image_offsets(exif))


def image_offsets(exif: Image.Exif) -> tuple[tuple[str, str], ...]:
    """The EXIF 2.31 offsets from UTC of ``exif`` (``CaptureTime.offsets``): ``OffsetTimeOriginal``,
    ``OffsetTimeDigitized`` then ``OffsetTime`` (the exports' order), each IFD0's before the Exif IFD's (where
    cameras write them), as stripped text, as MegaDetector's ``read_pil_exif`` reads tags; those absent, empty or
    not text left out. Whether a value is an offset is the exports' question (``camtrapdp.exif_offset``): the entry
    keeps what the photo says. Unreadable EXIF: none."""
    found = []
    try:
        sub = exif.get_ifd(_EXIF_IFD)
        for tag, name in _EXIF_OFFSET_TAGS:
            value = exif.get(tag)
            if value is None:
                value = sub.get(tag)
            if isinstance(value, str) and value.strip():
                found.append((name, value.strip()))
    except Exception:  # noqa: BLE001 - unreadable EXIF: no offset, the time stands (the task's zone applies)
        return ()
    return tuple(found)


def exif_capture_time(exif: Mapping[int, Any] | None) -> str | None:
    """The EXIF ``DateTimeOriginal`` as MegaDetector's ``run_detector_batch --include_image_timestamp`` writes it
    (``get_image_datetime``): the string itself, ``YYYY:MM:DD HH:MM:SS``, when it parses in that form, else None.

    Why from the EXIF the decode already read: a capture time is what turns detections into ecology (Camtrap DP's
    media timestamp, COCO's ``datetime``, sequences), and reading it again elsewhere would cost an image read each.
    Cameras that were never set write ``0000:00:00 00:00:00`` or blanks: those are None, not a date.
    """
    if not exif:
        return None
    value = exif.get(_EXIF_DATETIME_ORIGINAL)
    if not isinstance(value, str):
        return None
    try:
        time.strptime(value, _EXIF_TIME_FORMAT)
    except ValueError:
        return None
    return value




def decode_image(data: bytes) -> np.ndarray:
    """Decode image bytes the way MegaDetector's ``load_image`` does; returns the ``np.asarray`` of the PIL image.

    The result is HxWx3 uint8 for ordinary images. A 16-bit grayscale image (mode I;16) comes back as a 2-D uint16
    array, as it does in MegaDetector, where it later fails at inference; callers report it the same way.
    """
    return decode_image_and_time(data)[0]


def decode_image_and_time(data: bytes) -> tuple[np.ndarray, CaptureTime | None]:
    """``decode_image`` and the capture time (``image_capture_time``) of the image it returns, as MegaDetector
    reads it."""
    if not data:
        raise ImageAccessError("zero-byte file")
    try:
        image: Image.Image = Image.open(io.BytesIO(data))
        if image.mode not in _ACCEPTED_MODES:
            raise ImageAccessError(f"unsupported image mode {image.mode}", contract.REASON_UNSUPPORTED)
        if image.mode in ("RGBA", "L"):
            image = image.convert(mode="RGB")
        try:
            # ``_getexif``: JPEG/PNG/WebP/TIFF, and not the RGB copy of a grayscale or RGBA image, as in MegaDetector
            exif = image._getexif()  # type: ignore[attr-defined]
            orientation = exif.get(_EXIF_ORIENTATION, None)
            if orientation is not None and orientation in _EXIF_ROTATIONS:
                image = image.rotate(_EXIF_ROTATIONS[orientation], expand=True)
        except Exception:  # no EXIF, unreadable EXIF, or not a JPEG: MegaDetector ignores all of these
            pass
        image.load()
        return np.asarray(image), image_capture_time(image)  # from the image load_image returns, as MegaDetector
    except ImageAccessError:
        raise
    except Image.DecompressionBombError as exc:  # over PIL's pixel limit, as in MegaDetector
        raise ImageAccessError(f"{type(exc).__name__}: {exc}", contract.REASON_UNSUPPORTED) from exc
    except BAD_FILE_ERRORS as exc:
        raise ImageAccessError(f"{type(exc).__name__}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class LetterboxGeometry:
    """Where an ``orig_h x orig_w`` image lands in the padded network input (YOLOv5 ``letterbox``, auto=True)."""

    orig_h: int
    orig_w: int
    new_h: int
    new_w: int
    top: int
    bottom: int
    left: int
    right: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        return self.new_h + self.top + self.bottom, self.new_w + self.left + self.right


def letterbox_geometry(orig_h: int, orig_w: int, image_size: int, stride: int) -> LetterboxGeometry:
    r = min(image_size / orig_h, image_size / orig_w)
    new_w, new_h = int(round(orig_w * r)), int(round(orig_h * r))
    dw, dh = float(np.mod(image_size - new_w, stride)) / 2, float(np.mod(image_size - new_h, stride)) / 2
    if new_w <= 0 or new_h <= 0:
        raise ImageAccessError(f"image {orig_w}x{orig_h} is too thin to letterbox", contract.REASON_UNSUPPORTED)
    return LetterboxGeometry(orig_h, orig_w, new_h, new_w,
                             top=int(round(dh - 0.1)), bottom=int(round(dh + 0.1)),
                             left=int(round(dw - 0.1)), right=int(round(dw + 0.1)))


def letterbox_cpu(image: np.ndarray, image_size: int, stride: int) -> tuple[np.ndarray, LetterboxGeometry]:
    """YOLOv5's letterbox with OpenCV, identical to MegaDetector's classic preprocessing."""
    g = letterbox_geometry(image.shape[0], image.shape[1], image_size, stride)
    if (image.shape[1], image.shape[0]) != (g.new_w, g.new_h):
        image = cv2.resize(image, (g.new_w, g.new_h), interpolation=cv2.INTER_LINEAR)
    image = cv2.copyMakeBorder(image, g.top, g.bottom, g.left, g.right, cv2.BORDER_CONSTANT,
                               value=(LETTERBOX_VALUE,) * 3)
    return image, g


def letterbox_torch(image: torch.Tensor, g: LetterboxGeometry) -> torch.Tensor:
    """Letterbox an HxWx3 uint8 tensor (on any device) into a 3xHxW float tensor in [0, 255]."""
    x = image.permute(2, 0, 1).unsqueeze(0).float()
    if (g.orig_h, g.orig_w) != (g.new_h, g.new_w):
        x = torch.nn.functional.interpolate(x, size=(g.new_h, g.new_w), mode="bilinear", align_corners=False)
        x = x.round_().clamp_(0, 255)  # OpenCV returns uint8: round like it does
    x = torch.nn.functional.pad(x, (g.left, g.right, g.top, g.bottom), value=float(LETTERBOX_VALUE))
    return x[0]


def letterbox_torch_batch(images: list[torch.Tensor], g: LetterboxGeometry) -> torch.Tensor:
    """``letterbox_torch`` for several HxWx3 uint8 tensors of one shape at once: N x 3 x H x W float in [0, 255].

    The same operations on a batch (bilinear interpolation and padding work per image), so each image comes out
    exactly as ``letterbox_torch`` would give it, with a handful of kernel launches instead of a handful per image.
    """
    x = torch.stack(images).permute(0, 3, 1, 2).float()
    if (g.orig_h, g.orig_w) != (g.new_h, g.new_w):
        x = torch.nn.functional.interpolate(x, size=(g.new_h, g.new_w), mode="bilinear", align_corners=False)
        x = x.round_().clamp_(0, 255)
    return torch.nn.functional.pad(x, (g.left, g.right, g.top, g.bottom), value=float(LETTERBOX_VALUE))
