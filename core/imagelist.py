"""An explicit image list: the blob a request names in ``image_list``, read as the images to run, and only those.

Why: partners rarely want "every image under a prefix". They hold a captures file (the seed workflow 001's cleaned
captures CSV: one row per image, a path column, flags such as ``invalid``, and per-image columns such as season,
site, roll, capture) or a JSON list made by a script. This module reads either, one row at a time, so a list of
millions of rows is read in bounded memory:

* **JSON**: a top-level array of paths (``["a/1.jpg", ...]``) or of objects with the path under one of
  ``PATH_COLUMNS`` plus flags and metadata (``[{"file": "a/1.jpg", "site": "J05", "invalid": 0}, ...]``);
* **CSV**: a header row naming a path column (``PATH_COLUMNS``, case-insensitive), optional flag columns
  (``FLAG_COLUMNS``) and any other columns (metadata). A file whose single first line is itself an image path is a
  headerless list of paths, one per line.

A row whose flag is truthy (``is_truthy``: 1, 2, any other non-zero number, true, yes) is *excluded*: it is not
enumerated, so it is neither detected nor in any export (the seed's rule keeps such images out of the Zooniverse
manifest; here they stay out of everything the task makes). Every other column is metadata, carried per image into
every export (``activities.exports``): Zooniverse manifest columns, and COCO Camera Traps / Camtrap DP fields where
``gpu_batch.formats.listfields`` recognises a column (the rest kept beside them). Paths are blob names in the
request's container, relative to its ``prefix`` when one is given (``blob_name``).

How the list is enumerated (``activities.image_list``): rows are spread over units by name range (``unit_bounds``,
cut from a sample of the names, so a path listed twice lands in one unit, where it is kept once), each unit is
sorted by name and checked for existence in bounded parts (by listing each folder's run of names,
``folder_runs``), and names the container does not hold become failed entries of reason ``listed_not_found``
(``gpu_batch.manifest``) attached to a shard (``not_found_shards``), never sent to the pool and never dropped.

Must not: do I/O (callers hand it open files), or hold the rows of a list in memory.
"""
from __future__ import annotations

import bisect
import codecs
import csv
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, Callable, Iterator, Mapping, Sequence

import ijson

from core.errors import RequestInvalid
from core.shards import IMAGE_EXTENSIONS, has_dot_segment, is_image_name

PATH_COLUMNS = ("path", "file", "filename", "image_path", "image_path_rel")  # first one present wins
FLAG_COLUMNS = ("invalid", "image_is_invalid", "image_no_upload", "image_was_deleted")
_FALSY = {"", "0", "false", "no", "n", "f", "none", "null"}
_TRUTHY = {"true", "yes", "y", "t"}
_NUMBER_RE = re.compile(r"^[+-]?\d+(\.\d+)?$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME_CHARS = 1024  # the service's limit on a blob name
MAX_NAME_SEGMENTS = 254  # "the number of path segments comprising the blob name cannot exceed 254" (same page)
MAX_METADATA_COLUMNS = 64
MAX_METADATA_VALUE_CHARS = 2000


class ImageListInvalid(RequestInvalid):
    """The image list cannot be read as one (400 at the edge): its format, a row, or its size."""


@dataclass(frozen=True, slots=True)
class ListedImage:
    """One row of the list: its path (as written, normalized), whether a flag excludes it, and its metadata."""

    path: str
    excluded: bool = False
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ImageListSummary:
    """What the edge learns from one pass over the list; ``sha256`` (of the blob's bytes) is part of the task id."""

    sha256: str
    bytes: int
    format: str  # "json" or "csv"
    rows: int
    images: int  # rows not excluded (before first_n, duplicates and existence)
    excluded: int
    metadata_columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "bytes": self.bytes, "format": self.format, "rows": self.rows,
                "images": self.images, "excluded": self.excluded, "metadata_columns": list(self.metadata_columns)}


def _where(name: str, row: int) -> str:
    return f"image list {name!r}, row {row}"


def is_truthy(value: Any, name: str = "", row: int = 0, flag: str = "") -> bool:
    """Whether a flag value excludes its row: JSON true, a non-zero number, or true/yes/t/y; false/no/0/empty do
    not. Anything else is refused (a flag nobody can read is not silently taken either way)."""
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float, Decimal)):
        return value != 0
    text = str(value).strip().lower()
    if text in _FALSY:
        return False
    if text in _TRUTHY:
        return True
    if _NUMBER_RE.match(text):
        return Decimal(text) != 0
    raise ImageListInvalid(f"{_where(name, row)}: flag {flag!r} has the value {str(value)[:40]!r}",
                           "use 1 or 0 (true or false); 1 or 2 for 'invalid' as in the seed's captures files")


def normalize_path(value: Any, name: str, row: int) -> str:
    """A row's path as a blob name below the prefix: stripped, without a leading slash; refused when empty, not text,
    with control characters, too long, with a ``.``/``..`` folder (``core.shards.has_dot_segment``), or not an image
    trapbatch runs (those would fail anyway, after a GPU started)."""
    if not isinstance(value, str):
        raise ImageListInvalid(f"{_where(name, row)}: the path is {type(value).__name__}, not text",
                               'give each image as a path string, e.g. "site-a/IMG_0001.JPG"')
    path = value.strip().lstrip("/")
    while path.startswith("./"):  # `find .` writes paths so; a blob name has no such folder
        path = path[2:].lstrip("/")
    if not path:
        raise ImageListInvalid(f"{_where(name, row)}: the path is empty", "give every row the image's path, or "
                               "remove the row")
    if _CONTROL_RE.search(path) or len(path) > MAX_NAME_CHARS or path.count("/") >= MAX_NAME_SEGMENTS:
        raise ImageListInvalid(f"{_where(name, row)}: {path[:80]!r} is not a blob name (control characters, over "
                               f"{MAX_NAME_CHARS} characters or over {MAX_NAME_SEGMENTS} folders deep)",
                               "fix the path in the list")
    if has_dot_segment(path):
        raise ImageListInvalid(f"{_where(name, row)}: {path[:200]!r} has a '.' or '..' folder, which Azure's clients "
                               "resolve before sending (another blob would be read, or the request refused)",
                               "give the path as the blob is named in the container, e.g. \"site-a/IMG_0001.JPG\"")
    if not is_image_name(path):
        raise ImageListInvalid(f"{_where(name, row)}: {path[:200]!r} is not an image trapbatch runs "
                               f"({', '.join(IMAGE_EXTENSIONS)})", "remove the row, or flag it (e.g. invalid=1)")
    return path


def _looks_like_path(cell: str) -> bool:
    """Whether a list's first cell is an image path (a headerless list) rather than a column name: an image extension
    and a name that is not hidden. Not ``is_image_name``, which also refuses ``.``/``..`` folders: ``find .`` writes
    ``./a/1.jpg``, and a row such as ``a/../b.jpg`` is then refused by ``normalize_path`` with its own reason."""
    lower = cell.strip().lower()
    return lower.endswith(IMAGE_EXTENSIONS) and not lower.rsplit("/", 1)[-1].startswith(".")


def blob_name(prefix: str, path: str) -> str:
    """The blob name of a listed path: the request's ``prefix`` is the folder the list's paths are relative to."""
    if not prefix:
        return path
    return prefix + path if prefix.endswith("/") else f"{prefix}/{path}"


def _metadata_value(value: Any, name: str, row: int, column: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        raise ImageListInvalid(f"{_where(name, row)}: {column!r} holds a {type(value).__name__}",
                               "metadata values must be text, numbers or booleans")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if len(text) > MAX_METADATA_VALUE_CHARS:
        raise ImageListInvalid(f"{_where(name, row)}: {column!r} is longer than {MAX_METADATA_VALUE_CHARS} "
                               "characters", "shorten it")
    return text


def _row(path: Any, values: Mapping[str, Any], name: str, row: int) -> ListedImage:
    excluded = False
    metadata: dict[str, str] = {}
    for column, value in values.items():
        if column in FLAG_COLUMNS:
            excluded = is_truthy(value, name, row, column) or excluded
        else:
            metadata[column] = _metadata_value(value, name, row, column)
    return ListedImage(normalize_path(path, name, row), excluded, metadata)


def _path_column(header: Sequence[str], name: str) -> int:
    lowered = [h.strip().lower() for h in header]
    for candidate in PATH_COLUMNS:
        if candidate in lowered:
            return lowered.index(candidate)
    separated = next((sep for sep in (";", "\t") if len(header) == 1 and sep in header[0]), None)
    if separated is not None:  # Excel in many European locales saves "CSV" with semicolons
        raise ImageListInvalid(f"image list {name!r} separates its columns with {separated!r}, not commas",
                               "save it as CSV with commas (Excel: 'CSV UTF-8 (Comma delimited)'), or as JSON")
    raise ImageListInvalid(f"image list {name!r} has no path column (its header is {', '.join(header)[:200]!r})",
                           f"name the column with the image paths one of: {', '.join(PATH_COLUMNS)}")


def _csv_rows(fp: IO[bytes], name: str) -> Iterator[ListedImage]:
    text = io.TextIOWrapper(fp, encoding="utf-8-sig", newline="", errors="strict")
    try:
        reader = csv.reader(text)
        try:
            header = next(reader, None)
            if header is None:
                return
            if len(header) == 1 and _looks_like_path(header[0]):  # a headerless list of paths
                yield _row(header[0], {}, name, 1)
                for number, cells in enumerate(reader, start=2):
                    if cells and any(c.strip() for c in cells):
                        if len(cells) != 1:
                            raise ImageListInvalid(f"{_where(name, number)}: {len(cells)} columns in a list of "
                                                   "paths", "give a header row to use columns")
                        yield _row(cells[0], {}, name, number)
                return
            column = _path_column(header, name)
            names = [h.strip() for h in header]
            lowered = [h.lower() for h in names]
            keys = [lowered[i] if lowered[i] in FLAG_COLUMNS else names[i] for i in range(len(names))]
            for number, cells in enumerate(reader, start=2):
                if not cells or not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(keys):
                    raise ImageListInvalid(f"{_where(name, number)}: {len(cells)} values for {len(keys)} columns",
                                           "quote values that contain commas")
                values = {keys[i]: cells[i] for i in range(len(cells)) if i != column}
                yield _row(cells[column], values, name, number)
        except csv.Error as exc:
            raise ImageListInvalid(f"image list {name!r} is not a readable CSV: {exc}",
                                   "save it as UTF-8 CSV with a header row") from None
        except UnicodeDecodeError:
            raise ImageListInvalid(f"image list {name!r} is not UTF-8 text", "save it as UTF-8") from None
    finally:
        text.detach()


def _json_rows(fp: IO[bytes], name: str) -> Iterator[ListedImage]:
    try:
        for number, item in enumerate(ijson.items(fp, "item"), start=1):
            if isinstance(item, str):
                yield _row(item, {}, name, number)
                continue
            if not isinstance(item, dict):
                raise ImageListInvalid(f"{_where(name, number)}: a {type(item).__name__}, not a path or an object",
                                       'give paths ("a/1.jpg") or objects ({"file": "a/1.jpg", ...})')
            lowered = {str(k).strip().lower(): k for k in item}
            key = next((lowered[c] for c in PATH_COLUMNS if c in lowered), None)
            if key is None:
                raise ImageListInvalid(f"{_where(name, number)}: the object has no path",
                                       f"give the path under one of: {', '.join(PATH_COLUMNS)}")
            values = {(k.strip().lower() if k.strip().lower() in FLAG_COLUMNS else k.strip()): v
                      for k, v in item.items() if k != key}
            yield _row(item[key], values, name, number)
    except ijson.JSONError as exc:
        raise ImageListInvalid(f"image list {name!r} is not valid JSON: {str(exc)[:200]}",
                               'a JSON list is one array: ["a/1.jpg", ...] or [{"file": "a/1.jpg"}, ...]') from None


def detect_format(fp: IO[bytes]) -> str:
    """``json`` when the first character (after a byte-order mark and blanks) is ``[``, else ``csv``. ``fp`` is
    left at its start."""
    start = fp.read(4096)
    fp.seek(0)
    text = start.removeprefix(codecs.BOM_UTF8).lstrip()
    if text.startswith(b"{"):
        raise ImageListInvalid("the image list is a JSON object, not a list",
                               'give a JSON array: ["a/1.jpg", ...] or [{"file": "a/1.jpg", ...}]')
    return "json" if text.startswith(b"[") else "csv"


def iter_rows(fp: IO[bytes], name: str) -> Iterator[ListedImage]:
    """Every row of the list in ``fp`` (seekable, at its start), in order; ``ImageListInvalid`` names a bad row."""
    if detect_format(fp) == "json":
        fp.seek(len(codecs.BOM_UTF8) if fp.read(3) == codecs.BOM_UTF8 else 0)
        return _json_rows(fp, name)
    return _csv_rows(fp, name)


def sha256_of(fp: IO[bytes]) -> str:
    """The list's content hash (hex), part of the task id; ``fp`` is left at its start."""
    digest = hashlib.sha256()
    for block in iter(lambda: fp.read(1 << 20), b""):
        digest.update(block)
    fp.seek(0)
    return digest.hexdigest()


def scan(fp: IO[bytes], name: str, taken: Callable[[ListedImage], None] | None = None) -> ImageListSummary:
    """One pass over the whole list: every row is validated (a bad row anywhere is refused before a task starts),
    and the counts and metadata columns are taken. Refuses an empty list, or one with every row excluded.
    ``taken``: called with each row that is not excluded, in list order (the plan keeps them from this pass instead
    of parsing and validating the list again)."""
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    sha = sha256_of(fp)
    kind = detect_format(fp)
    rows = images = 0
    columns: dict[str, None] = {}
    for item in iter_rows(fp, name):
        rows += 1
        images += not item.excluded
        if taken is not None and not item.excluded:
            taken(item)
        for column in item.metadata:
            if column not in columns:
                columns[column] = None
                if len(columns) > MAX_METADATA_COLUMNS:
                    raise ImageListInvalid(f"image list {name!r} has more than {MAX_METADATA_COLUMNS} metadata "
                                           "columns", "keep the columns the exports need")
    fp.seek(0)
    if rows == 0:
        raise ImageListInvalid(f"image list {name!r} names no images", "put one image path per row (CSV) or item "
                               "(JSON) in it")
    if images == 0:
        raise ImageListInvalid(f"every one of the {rows} rows of image list {name!r} is flagged as excluded",
                               f"nothing would run; check the flag columns ({', '.join(FLAG_COLUMNS)})")
    return ImageListSummary(sha, size, kind, rows, images, rows - images, tuple(columns))


SAMPLE_PER_UNIT = 64  # sampled names per unit from which the units' name ranges are cut (sizes within ~1/8)


def sampled(name: str, every: int) -> bool:
    """Whether ``name`` is in the plan's sample of names, about one in ``every``: a stable hash, so the same name is
    always in or always out and the sample does not depend on row order or a seed."""
    return every <= 1 or int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") % every == 0


def unit_bounds(sample: Sequence[str], units: int) -> list[str]:
    """The names that cut the list into ``units`` name ranges of about equal size: unit ``k`` holds the names from
    ``bounds[k - 1]`` (included) to ``bounds[k]`` (excluded), by ``unit_in``. Why ranges and not a hash: a list part
    then checks a run of neighbouring names, which one listing of their folder answers (``folder_runs``), where a
    unit spread by hash needed one HEAD request per name (~1.5 ms of CPU each: ten million names, a third of the GPU
    time the task represents). From ``sample`` (any order, repeats allowed); fewer units than asked may come out
    empty when the sample is small."""
    ordered = sorted(sample)
    if units <= 1 or not ordered:
        return []
    return [ordered[k * len(ordered) // units] for k in range(1, units)]


def unit_in(name: str, bounds: Sequence[str]) -> int:
    """The unit of ``name`` for ``unit_bounds``'s ``bounds``: the same name always lands in the same unit."""
    return bisect.bisect_right(bounds, name)


@dataclass(frozen=True, slots=True)
class FolderRun:
    """Neighbouring names of one virtual folder in a sorted part, and the prefix one delimiter listing of them starts
    from (the longest prefix they share, so a listing skips the folder's names before them)."""

    prefix: str
    names: tuple[str, ...]


def folder_runs(names: Sequence[str]) -> list[FolderRun]:
    """``names`` (sorted) cut where the folder changes: what ``activities.image_list`` confirms by listing."""
    runs: list[FolderRun] = []
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or _folder(names[i]) != _folder(names[start]):
            group = tuple(names[start:i])
            runs.append(FolderRun(os.path.commonprefix([group[0], group[-1]]), group))
            start = i
    return runs


def _folder(name: str) -> str:
    return name[:name.rfind("/") + 1]


def not_found_shards(selected: Sequence[int], not_found: Sequence[int], images_per_shard: int) -> dict[int, int]:
    """The shard each listing part's not-found names are reported in: the shard holding the part's first selected
    image, or for a part without one the shard of the next image (the last shard past the end). Parts without
    not-found names are left out; no shards (nothing found): empty. Pure arithmetic on counts."""
    total = sum(selected)
    shards = -(-total // images_per_shard)
    out: dict[int, int] = {}
    if shards == 0:
        return out
    position = 0
    for part, (n, missing) in enumerate(zip(selected, not_found)):
        if missing:
            out[part] = min(position // images_per_shard, shards - 1)
        position += n
    return out


def not_found_by_batch(batches: Sequence[Mapping[str, Any]], parts: Sequence[tuple[int, int]],
                       selected: Sequence[int], not_found: Sequence[int],
                       images_per_shard: int) -> list[list[list[int]]]:
    """Per shard-writing batch (``core.shards.shard_batches``), the ``[unit, part, shard]`` of the listing parts
    whose names not found one of its shards reports (``not_found_shards``)."""
    where = not_found_shards(selected, not_found, images_per_shard)
    out: list[list[list[int]]] = []
    for batch in batches:
        first, count = int(batch["first"]), int(batch["count"])
        out.append([[parts[k][0], parts[k][1], shard] for k, shard in sorted(where.items())
                    if first <= shard < first + count])
    return out
