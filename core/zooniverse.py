"""Zooniverse subject manifests from a results file: every image a volunteer should see, split into upload batches.

Why: projects that classify species with volunteers upload subjects to Zooniverse with a manifest (a CSV the
Panoptes CLI reads: a file column plus metadata; columns starting with ``#`` are hidden from volunteers). The seed
workflow (../shared/reference/seeds/001) builds one from its captures, adds the detector's predictions, and splits it
into batches by ``max_batch_size`` or ``number_of_batches``, at random by default, because Zooniverse advises against
very large uploads. This module does the same for a results file:

* one row per image, except failed images (nothing to show), photos cut short (``gpu_batch.formats.entries.CUT_SHORT``:
  their lower part is grey fill) and images flagged as excluded in the image list
  (``EXCLUDING_FLAGS``, the seed's captures-file rules: ``invalid`` 1 or 2; ``image_is_invalid``,
  ``image_no_upload``, ``image_was_deleted`` 1), so each remaining image is in exactly one batch;
* an image list's metadata columns (``core.imagelist``: e.g. season, site, roll, capture) after the fixed ones;
* ``attribution`` and ``license`` columns (shown to volunteers), and the detector's view as hidden fields:
  ``#detector_max_conf`` (the image's highest confidence, 0 without detections; removed repeats do not count) and
  ``#detector_top_category`` (that detection's category, ``empty`` when it is below the threshold);
* batches as even as possible; with ``shuffle`` (the default) which image goes to which batch is a seeded
  pseudo-random permutation (a Feistel network over the image ordinals, cycle-walked to the exact count), so it is
  random yet computable image by image, with no list of millions of rows in memory; without, batches follow the
  results' order.

Must not: do I/O.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from array import array
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from core.errors import RequestInvalid
from gpu_batch.formats import csvline
from gpu_batch.formats.zooniverse_rows import EXCLUDING_FLAGS as EXCLUDING_FLAGS
from gpu_batch.formats.zooniverse_rows import excluded as excluded
from gpu_batch.formats.zooniverse_rows import cell, facts, fixed_line, threshold_field

COLUMNS = ["image_name_1", "folder", "attribution", "license", "#file", "#detector_max_conf",
           "#detector_top_category", "#detector_threshold"]
DEFAULT_MAX_BATCH_SIZE = 10_000
MAX_BATCHES = 10_000
# Images in one subject of a capture or visit at most (``core.captures.subjects``: a longer one is split; the
# setting TRAPBATCH_ZOONIVERSE_MAX_FRAMES, core.settings, the same default)
DEFAULT_MAX_FRAMES = 20


@dataclass(frozen=True, slots=True)
class ManifestOptions:
    """How to build the manifests; exactly one of ``max_batch_size`` / ``number_of_batches`` (neither: the default
    batch size)."""

    threshold: float
    attribution: str = ""
    license: str = ""
    max_batch_size: int | None = None
    number_of_batches: int | None = None
    shuffle: bool = True
    seed: int = 0
    # The image list's metadata columns (core.imagelist), after the fixed ones: the seed's manifests carry the
    # captures file's columns (season, site, roll, capture...) as subject metadata.
    metadata_columns: tuple[str, ...] = ()
    # A capture's (or visit's) images in one subject at most (``core.captures.subjects``): a longer one is split into
    # subjects of this many, so no manifest row carries hundreds of image columns.
    max_frames: int = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise RequestInvalid(f"'max_frames' must be a positive integer, got {self.max_frames}",
                                 "TRAPBATCH_ZOONIVERSE_MAX_FRAMES: e.g. 20")
        if self.max_batch_size is not None and self.number_of_batches is not None:
            raise RequestInvalid("give 'max_batch_size' or 'number_of_batches', not both",
                                 "the seed workflow's split_manifest_into_batches takes one of them")
        for name in ("max_batch_size", "number_of_batches"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= (MAX_BATCHES if name == "number_of_batches" else 10**9):
                raise RequestInvalid(f"'{name}' must be a positive integer, got {value}", f"e.g. {name}: 10")


# A column that names a subject's photo: ``trapbatch zooniverse`` fetches and fits what such a column names, and the
# upload command it prints hands each to the Panoptes CLI as a file (``-f``).
IMAGE_COLUMN = re.compile(r"image_name_(\d+)$")  # its number: the photo's place in the subject


def metadata_column(name: str, fixed: list[str]) -> str:
    """An image list's column as the manifest names it: ``list_`` before a name that is one of the ``fixed`` columns
    or could be an image column (``image_name_7``: its values would be taken for photos and uploaded)."""
    return f"list_{name}" if name in fixed or IMAGE_COLUMN.match(name) else name


def columns(options: ManifestOptions) -> list[str]:
    """The manifest's header: ``COLUMNS``, then the image list's metadata columns (``metadata_column``: one named
    like a fixed or an image column gets the prefix ``list_``, so neither hides the other)."""
    return COLUMNS + [metadata_column(c, COLUMNS) for c in options.metadata_columns]


def row(entry: Mapping[str, Any], options: ManifestOptions, detection_categories: Mapping[str, str],
        metadata: Mapping[str, str] | None = None) -> list[Any]:
    """The manifest row of an image (``columns(options)`` order); ``metadata``: its row of the image list."""
    file, folder, conf, top = facts(entry, options.threshold, detection_categories)
    listed = [(metadata or {}).get(c, "") for c in options.metadata_columns]
    return [file, folder, options.attribution, options.license, file, conf, top, options.threshold, *listed]


@functools.lru_cache(maxsize=64)
def quoted_options(options: ManifestOptions) -> tuple[str, str]:
    """The row's per-task fields as CSV text: ``,attribution,license,`` and ``,threshold``."""
    return (f",{csvline.manifest_field(cell(options.attribution))},{csvline.manifest_field(cell(options.license))},",
            threshold_field(options.threshold))


def row_line(entry: Mapping[str, Any], options: ManifestOptions, detection_categories: Mapping[str, str],
             metadata: Mapping[str, str] | None = None) -> str:
    """``row`` as the CSV line (with its ``\\r\\n``) ``csv.writer`` writes of it (``gpu_batch.formats.csvline``), the
    per-task fields quoted once."""
    middle, threshold = quoted_options(options)
    text = fixed_line(entry, options.threshold, detection_categories, middle, threshold)
    if options.metadata_columns:
        text += "".join(["," + csvline.manifest_field(cell((metadata or {}).get(c, "")))
                         for c in options.metadata_columns])
    return text + csvline.TERMINATOR


def batch_count(eligible: int, options: ManifestOptions) -> int:
    if eligible == 0:
        return 0
    if options.number_of_batches is not None:
        return min(options.number_of_batches, eligible)
    return math.ceil(eligible / (options.max_batch_size or DEFAULT_MAX_BATCH_SIZE))


class BatchAssigner:
    """Which batch (0-based) the ``i``-th eligible image goes to, for ``n`` images in ``batches`` batches whose sizes
    differ by at most one (the first ``n % batches`` get one more)."""

    def __init__(self, n: int, batches: int, shuffle: bool, seed: int) -> None:
        self.n, self.batches = n, max(batches, 1)
        self.q, self.r = divmod(n, self.batches)
        self.shuffle = shuffle and n > 1
        bits = max(2, (n - 1).bit_length())
        self.half = (bits + 1) // 2
        self.mask = (1 << self.half) - 1
        digest = hashlib.sha256(f"trapbatch-zooniverse-{seed}".encode()).digest()
        self.keys = [int.from_bytes(digest[i:i + 4], "big") for i in range(0, 24, 4)]  # six Feistel rounds
        self._table: tuple[list[int], ...] | None = None

    def _round(self, value: int, key: int) -> int:
        x = (value * 0x9E3779B1 + key) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x85EBCA6B) & 0xFFFFFFFF
        x ^= x >> 13
        return x & self.mask

    def _tables(self) -> tuple[list[int], ...]:
        """``self._round(r, key)`` for every ``r`` below ``2**half``, one list per round key: a round of
        ``position`` is then one lookup and one xor. ``2**half`` is at most about ``2 * sqrt(n)``, so building them
        costs a small fraction of assigning the ``n`` images (built on the first ``position``)."""
        if self._table is None:
            self._table = tuple([self._round(r, key) for r in range(self.mask + 1)] for key in self.keys)
        return self._table

    def positions(self, start: int, stop: int) -> Iterator[int]:
        """Each image's place in the shuffled order (a bijection of ``range(n)``), for ``range(start, stop)``: one
        loop for a range, as the exports assign every eligible image (a call per image cost as much as the rounds)."""
        if not self.shuffle:
            yield from range(start, stop)
            return
        half, mask, n = self.half, self.mask, self.n
        f0, f1, f2, f3, f4, f5 = self._tables()
        for x in range(start, stop):
            while True:  # cycle walking: the Feistel network permutes [0, 4**half); stay until we land below n
                # six rounds of (left, right) -> (right, left ^ _round(right, key)), unrolled on the tables: after
                # rounds 1, 3, 5 the halves are (b, a), after 2, 4, 6 (a, b)
                a, b = x >> half, x & mask
                a ^= f0[b]
                b ^= f1[a]
                a ^= f2[b]
                b ^= f3[a]
                a ^= f4[b]
                b ^= f5[a]
                x = (a << half) | b
                if x < n:
                    break
            yield x

    def position(self, i: int) -> int:
        """The image's place in the shuffled order."""
        return next(self.positions(i, i + 1))

    def batch(self, i: int) -> int:
        return self.batch_range(i, i + 1)[0]

    def batch_range(self, start: int, stop: int) -> "array[int]":
        """``batch(i)`` for every ``i`` in ``range(start, stop)``, 8 bytes each (filled from a generator: a list
        first would hold ~36 bytes an image at once, 360 MB for the ten million subjects a captures combine may
        assign, of an instance's 2 GB for eight activities)."""
        q, r = self.q, self.r
        big, wide = r * (q + 1), q + 1
        return array("q", (p // wide if p < big else r + (p - big) // q for p in self.positions(start, stop)))
