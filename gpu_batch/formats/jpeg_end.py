"""Whether a JPEG was cut short, from its bytes alone: the one rule the GPU worker (which names such photos
"damaged" in a task's results) and the CLI (which makes photos fit for Zooniverse) share.

Why here, not in ``gpu_batch.worker.preprocess``: that module imports torch and OpenCV, which the CLI does not
install; this one needs nothing but the bytes.
"""
from __future__ import annotations

# Bytes a camera or a copy may leave after a JPEG's end-of-image marker: cards' preallocated files and some cameras'
# fixed-size writes fill the rest with zeros, others with 0xFF (JPEG's fill byte).
_JPEG_PADDING = b"\x00\xff"
_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_TAIL_WINDOW = 64 * 1024  # the padding is skipped this many bytes at a time, so a long run costs no full copy


def jpeg_cut_short(data: bytes) -> bool:
    """Whether ``data`` is a JPEG (it starts with the start-of-image marker) whose end-of-image marker (FF D9) is
    missing: the last bytes before any trailing padding (zeros or 0xFF) are something else. Such a file was cut
    short (a camera that lost power mid-write, a partial upload or copy) and decodes "as far as it goes", with gray
    fill (``LOAD_TRUNCATED_IMAGES``, as in MegaDetector): its detections stand, but the user should re-copy it.

    Why from the bytes: they are in memory already, and the check reads only the tail (no second decode, no full
    copy); only a file whose tail is not the marker is searched for it (``_first_scan``), so data a camera or phone
    appends after the image (a motion photo's video) is no damage. Any other format (PNG, TIFF...) is never called
    cut short here. (``cli.photo_fit`` asks the same when it makes a photo fit for Zooniverse.)
    """
    if data[:2] != _JPEG_SOI:
        return False
    if ends_at_eoi(data):
        return False
    # Not at the end: data after the marker (a phone's motion-photo video, a maker's trailer) or none at all. Only
    # then is the file searched, after its first scan's start: entropy-coded data never holds FF D9 (byte stuffing),
    # and an EXIF thumbnail's own end marker comes before it.
    # Searched from the end: the answer is the same (any FF D9 after the scan's start), and a trailer holds one near
    # its end or ends right after the image's own, where searching forward crossed all the scan data (2.9 ms for a
    # 2.8 MB photo with a trailer against 0.04 ms: at 400 images/s a core's worth, were every photo a motion photo).
    scan = _first_scan(data)
    return scan is None or data.rfind(_JPEG_EOI, scan) < 0


def ends_at_eoi(data: bytes) -> bool:
    """Whether the last bytes of ``data`` before any trailing padding (zeros or 0xFF, in any mix) are the
    end-of-image marker FF D9: the JPEG is whole and nothing but fill follows it.

    Why padding counts as the end: a decoder stops at the end-of-image marker (ITU-T T.81 B.2.1: the compressed
    image data ends with EOI; B.1.1.2 lets any marker be preceded by 0xFF fill bytes), so bytes after it cannot
    change a pixel; and FF D9 cannot occur inside entropy-coded data (an FF there is followed by 00 or RST0-7), so a
    file cut short and then padded does not end so. Anything else after the marker (a motion photo's video) is not
    padding: False here (``jpeg_cut_short`` searches such files further). Reads the tail only, ``_TAIL_WINDOW``
    bytes at a time: no copy of the whole file, however long the padding."""
    end = len(data)
    while end > 2:
        start = max(2, end - _TAIL_WINDOW)
        kept = len(data[start:end].rstrip(_JPEG_PADDING))
        if kept:
            end = start + kept
            break
        end = start
    return data[max(0, end - 2):end] == _JPEG_EOI


_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field


def _first_scan(data: bytes) -> int | None:
    """Where a JPEG's first start-of-scan segment is, walking its marker segments; None where they cannot be walked
    (then the tail alone decides)."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF or marker in _STANDALONE_MARKERS:
            at += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:
            return at
        at += 2 + int.from_bytes(data[at + 2:at + 4], "big")
    return None
