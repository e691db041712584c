"""The files an enumeration listed but does not run, tallied by kind, so a task says what it left out.

Why: camera-trap collections hold more than stills: videos from cameras in video mode, RAW or TIFF frames, sidecar
notes, the ``._IMG_0001.JPG`` files macOS leaves on SD cards. MegaDetector's runner (and trapbatch, which runs the
same extensions, ``core.shards.IMAGE_EXTENSIONS``) passes over them without a word, so a task whose results leave out
a hundred thousand videos looked as complete as one that covered its folder. Each listing call tallies what it passed
over (``NotImages``, a small document per listing part that had any); the enumeration's last step adds them up into
the enumeration summary (every kind, its count and a few example names) and hands the orchestrator the total and the
largest kinds (no names: blob names never enter the orchestration history), which the task status, the preview page
and the CLI show.

What is not counted: folder markers. A storage account with a hierarchical namespace lists each directory as a blob
of zero bytes named like the folder (no extension; reported in MicrosoftDocs/azure-docs#57754 and
Azure/azure-sdk-for-python#34734; List Blobs adds a ``ResourceType`` element from version 2020-10-02, which
``adapters.listing`` does not parse), and tools create ``folder/`` placeholder blobs; neither is a file anyone
dropped. A zero-byte file without an extension is taken for a marker too (nothing is lost: it is no image). Nor
trapbatch's own files at the top of an image container: the start-on-arrival marker and the answer written beside it
(``gpu_batch.layout.READY_MARKER``): every task started by a marker would otherwise report its own marker as a file
it left out.

Pure: no I/O.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from gpu_batch import layout
from gpu_batch.manifest import has_dot_segment

MAX_KINDS = 64  # distinct kinds kept; past that a listing of odd names (random suffixes) goes to OTHER
EXAMPLES = 3  # example names kept per kind, the first in listing order
TOP_KINDS = 5  # kinds handed to the orchestrator (and so the status): the largest
HIDDEN = "(hidden)"
NO_EXTENSION = "(no extension)"
OTHER = "(other)"
DOT_FOLDER = "(a '.' or '..' folder)"

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mts", ".m2ts", ".m4v", ".wmv", ".3gp", ".mkv", ".mpg",
                              ".mpeg", ".asf"})
TRAPBATCH_OWN = frozenset({layout.READY_MARKER, layout.ready_receipt_blob(), layout.ready_error_blob()})
OTHER_IMAGE_EXTENSIONS = frozenset({".tif", ".tiff", ".bmp", ".webp", ".heic", ".heif", ".dng", ".cr2", ".cr3",
                                    ".nef", ".arw", ".orf", ".rw2", ".raw"})


def kind_of(name: str, size: int | None = None) -> str | None:
    """The kind a file that is not run is tallied under (its lower-case extension, or one of the bracketed kinds);
    None for a folder marker (``size`` 0 without an extension, or a name ending in ``/``) and for trapbatch's own
    files at the top of the container (``TRAPBATCH_OWN``). ``size`` None: unknown."""
    base = name.rsplit("/", 1)[-1]
    if not base or name in TRAPBATCH_OWN:
        return None
    if ("/." in name or name[:1] == ".") and has_dot_segment(name):  # before the extension: often a .jpg
        return DOT_FOLDER
    if base.startswith("."):
        return HIDDEN
    _stem, dot, ext = base.rpartition(".")
    if not dot:
        return None if size == 0 else NO_EXTENSION
    ext = "." + ext.lower()
    return ext if 1 < len(ext) <= 12 and ext[1:].isalnum() else OTHER


class NotImages:
    """A tally of files not run: per kind, how many and the first few names (by name). Tallies merge in any order."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}

    @property
    def files(self) -> int:
        return sum(self.counts.values())

    def add(self, name: str, size: int | None = None) -> None:
        kind = kind_of(name, size)
        if kind is not None:
            self._add(kind, 1, (name,))

    def _add(self, kind: str, count: int, names: Iterable[str], keep: int | None = EXAMPLES) -> None:
        if kind not in self.counts and len(self.counts) >= MAX_KINDS:
            kind = OTHER
        self.counts[kind] = self.counts.get(kind, 0) + count
        kept = self.examples.setdefault(kind, [])
        for name in names:
            if keep is not None and len(kept) >= keep:
                break
            kept.append(name)

    def merge(self, doc: Mapping[str, Any]) -> None:
        """Another tally's ``to_dict``. Its examples are all kept until ``to_dict``, which keeps the first few by
        name (listing order): each tally's first few hold the overall first few, in whatever order tallies merge."""
        for kind, row in (doc.get("kinds") or {}).items():
            self._add(str(kind), int(row["files"]), (str(n) for n in row.get("examples") or ()), keep=None)

    def to_dict(self) -> dict[str, Any]:
        """The document: the total and every kind, largest first, with its examples and what to do about it."""
        kinds: dict[str, Any] = {}
        for kind, count in self.ranked():
            row: dict[str, Any] = {"files": count, "examples": sorted(set(self.examples.get(kind, [])))[:EXAMPLES]}
            why = advice(kind)
            if why:
                row["hint"] = why
            kinds[kind] = row
        return {"files": self.files, "kinds": kinds}

    def ranked(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))

    def summary(self) -> dict[str, Any]:
        """What the orchestrator gets (its history and the task status): the total and the largest kinds' counts."""
        return {"files": self.files, "kinds": dict(self.ranked()[:TOP_KINDS])}


def advice(kind: str) -> str:
    """What a person can do about files of this kind (empty when nothing: a sidecar file is simply not an image)."""
    if kind in VIDEO_EXTENSIONS:
        return ("a video: trapbatch runs still images only; MegaDetector runs videos frame by frame with its "
                "process_video script, or extract frames to JPEG and run those")
    if kind in OTHER_IMAGE_EXTENSIONS:
        return "an image format MegaDetector does not read (it takes .jpg, .jpeg, .png, .gif): convert to JPEG to run it"
    if kind == DOT_FOLDER:
        return ("a name with a '.' or '..' folder (e.g. 'a/../b.jpg'), which Azure Storage keeps as written but its "
                "clients resolve before sending, so reading it would read another blob: copy it to a name without "
                "such a folder to run it")
    if kind == HIDDEN:
        return "a hidden file (a name starting with '.', e.g. the '._' files macOS writes); never run, as MegaDetector"
    return ""


def describe(summary: Mapping[str, Any]) -> str:
    """One line for people: ``12,040 files are not images and were not run (.mp4 12,000, .txt 40)``, from
    ``summary()`` or ``to_dict()``."""
    files = int(summary.get("files") or 0)
    kinds = summary.get("kinds") or {}
    counts = {kind: int(row["files"] if isinstance(row, Mapping) else row) for kind, row in kinds.items()}
    shown = ", ".join(f"{kind} {n:,}" for kind, n in counts.items())
    more = files - sum(counts.values())
    if more > 0:
        shown += f", {more:,} more"
    verb = "is not an image and was" if files == 1 else "are not images and were"
    return f"{files:,} file{'' if files == 1 else 's'} {verb} not run ({shown})"
