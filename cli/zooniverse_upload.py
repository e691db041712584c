"""A Zooniverse upload folder: a finished task's subject manifests with their photos beside them, each small enough
for Zooniverse, ready for the Panoptes CLI's ``upload-subjects``.

Why: the manifests name each photo by its blob name, and the Panoptes CLI reads a manifest's files relative to the
manifest's own folder and refuses any over 1 MiB (panoptes-cli ``commands/subject_set.py``: ``MAX_UPLOAD_FILE_SIZE =
1024 * 1024``; the Project Builder's limit is 1,000 KB). Camera-trap photos are mostly 2-6 MB, so the manual workflow
began with "Compress Images (Zooniverse has a size limit)" (Snapshot Safari's camera-trap-data-pipeline,
``image_compression.compress_images``) before its manifest and upload steps (../shared/reference/seeds/001). This
module is that step for trapbatch's manifests: it downloads every photo a chosen batch names from the task's own
images container, writes it under the manifest's folder at its blob name, and shrinks only the photos over the limit.

* A photo at or under ``max_bytes`` is written as it is, byte for byte (its EXIF included).
* A larger one is decoded, turned upright by its EXIF orientation, scaled down (its aspect kept) until its encoding
  fits, and written in its own format (JPEG at quality 85) under the same name; the copy carries no EXIF block, so
  no camera GPS position reaches the volunteers' site from it.
* Resumable: a photo already in the folder and within the limit is not fetched again; files are written through
  ``<name>.part`` and renamed when whole, so an interrupted run leaves no half photo that looks complete.
* A photo that cannot be fetched (deleted since the task ran) or decoded is named in ``problems.csv`` beside the
  manifest and the command ends with exit 4; the rest are written. Access refused stops at once, with what to do.

Blocking I/O on the operator's machine (it is the CLI); the size fitting (``fit``) is pure.
"""
from __future__ import annotations

import csv
import io
import math
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

from cli.download import _fetch, _safe_join, local_paths
from cli.errors import CliError

# Under both limits: the Panoptes CLI's 1,048,576 bytes and the Project Builder's 1,000 KB.
MAX_BYTES = 1_000_000
JPEG_QUALITY = 85
MIN_SIDE = 64  # no photo is shrunk below this many pixels on its longer side: something else is wrong then
FIT_ATTEMPTS = 8
IMAGE_COLUMN = re.compile(r"image_name_(\d+)$")
PROBLEMS_FILE = "problems.csv"
VARIANTS = ("original", "repeats-removed")


class Unfittable(ValueError):
    """A photo that cannot be decoded, or not shrunk under the limit."""


def image_columns(header: Sequence[str]) -> list[int]:
    """The positions of the manifest's image columns (``image_name_1`` ... ``image_name_N``), in N's order: the
    columns to name with the Panoptes CLI's ``-f`` (1-based: position + 1)."""
    found = sorted((int(m.group(1)), i) for i, name in enumerate(header) if (m := IMAGE_COLUMN.match(name)))
    if not found:
        raise CliError("the manifest has no image_name_1 column", "this is not a trapbatch Zooniverse manifest; "
                       "report this if it came from trapbatch")
    return [i for _, i in found]


def manifest_photos(text: str) -> tuple[list[int], list[str]]:
    """(image column positions, every photo the manifest names, once each, in row order; a shorter capture's empty
    cells left out). Read as the Panoptes CLI reads it (``csv.reader`` with ``skipinitialspace``)."""
    rows = csv.reader(io.StringIO(text), skipinitialspace=True)
    header = next(rows, None)
    if header is None:
        raise CliError("the manifest is empty", "run the same command again; report it if it stays empty")
    columns = image_columns(header)
    names = [row[i] for row in rows for i in columns if i < len(row) and row[i]]
    return columns, list(dict.fromkeys(names))


def upload_command(manifest: Path, columns: Sequence[int]) -> str:
    """The Panoptes CLI line that uploads ``manifest``: its image columns named (else every cell that is an existing
    path is taken as a file: the ``folder`` and ``#file`` cells too), ``-M`` when a subject holds several photos
    (a shorter capture leaves its last cells empty)."""
    flags = " ".join(f"-f {i + 1}" for i in columns) + (" -M" if len(columns) > 1 else "")
    return f"panoptes subject-set upload-subjects {flags} <subject set id> {manifest}"


def fit(data: bytes, max_bytes: int = MAX_BYTES) -> bytes:
    """``data`` itself when it is at most ``max_bytes``, else the photo scaled down until its encoding fits: upright
    by its EXIF orientation, in its own format, without EXIF. ``Unfittable`` when it cannot be decoded or does not
    fit even at ``MIN_SIDE`` pixels."""
    if len(data) <= max_bytes:
        return data
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            fmt = opened.format or "JPEG"
            image = ImageOps.exif_transpose(opened)
            image.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise Unfittable(f"cannot be decoded: {exc}") from None
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    width, height = image.size
    # a JPEG's size follows its pixel count: start from the share of pixels that the byte ratio suggests
    floor = min(1.0, MIN_SIDE / max(width, height))
    scale = max(floor, min(1.0, math.sqrt(max_bytes / len(data))))
    smallest = ""
    for _ in range(FIT_ATTEMPTS):
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        small.save(buffer, fmt, **({"quality": JPEG_QUALITY} if fmt in ("JPEG", "WEBP") else {}))
        encoded = buffer.getvalue()
        if len(encoded) <= max_bytes:
            return encoded
        smallest = f"{size[0]}x{size[1]} pixels: {len(encoded)} bytes"
        if scale <= floor:
            break
        scale = max(floor, scale * min(0.9, math.sqrt(max_bytes / len(encoded)) * 0.97))
    raise Unfittable(f"does not fit in {max_bytes} bytes (the smallest tried: {smallest}; none under {MIN_SIDE} "
                     "pixels is tried)")


@dataclass
class Prepared:
    """What one manifest's preparation did."""

    manifest: Path
    columns: list[int]
    photos: int = 0
    copied: int = 0  # written as they are
    shrunk: int = 0
    kept: int = 0  # already in the folder from an earlier run
    problems: list[tuple[str, str]] = field(default_factory=list)


def manifests(answer: dict[str, Any], status: dict[str, Any], variant: str | None,
              batches: Iterable[int] = ()) -> tuple[str, list[tuple[str, str, str]]]:
    """(variant, [(container, manifest blob, its path in the results folder)]): the Zooniverse manifests of
    ``variant`` (None: the repeats-removed one when the task has it, it being the one whose repeats were dealt with,
    else the original), or of the batches numbered in ``batches`` only."""
    files = (answer.get("results") or {}).get("files") or {}
    if variant is None:
        variant = "repeats-removed" if "repeats-removed" in files else "original"
    if variant not in files:
        raise CliError(f"the task has no {variant} results", f"choose --variant from: {', '.join(files) or 'none'}")
    names = {blob for rel, blob in (files[variant].get("exports") or {}).items()
             if PurePosixPath(rel).parent.name == "zooniverse" and rel.endswith(".csv")}
    wanted = {f"batch-{n:03d}.csv" for n in batches}
    found = [(c, blob, path) for c, blob, path in local_paths(answer, status)
             if blob in names and (not wanted or PurePosixPath(blob).name in wanted)]
    if not found:
        raise CliError(f"the task's {variant} results have no Zooniverse manifest"
                       + (f" numbered {', '.join(str(b) for b in batches)}" if wanted else ""),
                       "a task's manifests are made when its exports ran with at least one image that did not "
                       "fail; see GET /api/tasks/{id}/results for its files")
    return variant, sorted(found, key=lambda item: item[2])


def source_location(answer: dict[str, Any]) -> tuple[str, str]:
    """(container, account URL or "" for the app's own account) of the task's images, as the app names them."""
    source = answer.get("source")
    if not isinstance(source, dict) or not source.get("container"):
        raise CliError("the app does not say where this task's images are",
                       "update the trapbatch app (its GET /api/tasks/{id}/results names them as 'source' since "
                       "this CLI's release)")
    return str(source["container"]), str(source.get("account_url") or "")


def source_service(connection: str, results_service: Any, account_url: str) -> Any:
    """A client for the account that holds the task's images: ``connection`` when given (a connection string; one
    with a SAS will do), else the results' own client for the app's own account (``account_url`` empty), else the
    signed-in Azure identity against ``account_url``."""
    from azure.storage.blob import BlobServiceClient

    if connection:
        try:
            return BlobServiceClient.from_connection_string(connection)
        except ValueError:
            raise CliError("the --source-connection string is not a connection string",
                           "give the images' account connection string, or leave it out to use your Azure "
                           "sign-in") from None
    if not account_url:
        return results_service
    if not account_url.startswith("https://"):
        raise CliError(f"the images are in {account_url}, which a sign-in token may not be sent to (not https)",
                       "give that account's connection string with --source-connection")
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url, credential=DefaultAzureCredential())


def prepare(results_service: Any, source_service: Any, source_container: str,
            manifest_files: Sequence[tuple[str, str, str]], out: Path, max_bytes: int = MAX_BYTES, workers: int = 8,
            on_photo: Callable[[], None] | None = None,
            on_manifest: Callable[[Path, int], None] | None = None) -> list[Prepared]:
    """Download each manifest into ``out`` at its path, and every photo it names under the manifest's folder at its
    blob name, each at most ``max_bytes`` (``fit``), ``workers`` at a time. ``on_manifest(path, photos)`` before a
    manifest's photos, ``on_photo()`` after each."""
    done: list[Prepared] = []
    for container, blob, path in manifest_files:
        manifest = _safe_join(out, path)
        _fetch(results_service, container, blob, manifest)
        columns, photos = manifest_photos(manifest.read_text(encoding="utf-8"))
        report = Prepared(manifest, columns, photos=len(photos))
        if on_manifest:
            on_manifest(manifest, len(photos))
        folder = manifest.parent
        lock = threading.Lock()

        def one(name: str) -> None:
            outcome = _photo(source_service, source_container, name, folder, max_bytes)
            with lock:
                if outcome in ("copied", "shrunk", "kept"):
                    setattr(report, outcome, getattr(report, outcome) + 1)
                else:
                    report.problems.append((name, outcome))
            if on_photo:
                on_photo()

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(one, name) for name in photos]
            try:
                for future in futures:
                    future.result()  # an access refusal (CliError) ends the command here
            except BaseException:  # that, or Ctrl-C: the photos not started are not fetched
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        problems = folder / PROBLEMS_FILE
        if report.problems:
            with open(problems, "w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["photo", "problem"])
                writer.writerows(sorted(report.problems))
        else:
            problems.unlink(missing_ok=True)
        done.append(report)
    return done


def _photo(service: Any, container: str, name: str, folder: Path, max_bytes: int) -> str:
    """Put photo ``name`` under ``folder``: "copied", "shrunk", "kept" (there already, within the limit), or what
    stood in the way."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    dest = _safe_join(folder, name)
    try:
        if 0 < dest.stat().st_size <= max_bytes:
            return "kept"
    except FileNotFoundError:
        pass
    try:
        data = service.get_blob_client(container, name).download_blob().readall()
    except ResourceNotFoundError:
        return "not found in the images' container (deleted or moved since the task ran?)"
    except ClientAuthenticationError as exc:
        raise CliError(f"not allowed to read {container}/{name} ({type(exc).__name__})", _ACCESS_HINT) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise CliError(f"not allowed to read {container}/{name} (403)", _ACCESS_HINT) from None
        return f"reading it failed: {exc.status_code} {exc.reason}"
    except AzureError as exc:
        return f"reading it failed: {type(exc).__name__}"
    try:
        fitted = fit(data, max_bytes)
    except Unfittable as exc:
        return str(exc)
    partial = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(fitted)
        partial.replace(dest)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}",
                       "free space or choose another --out folder, then run the same command again") from None
    return "copied" if fitted is data else "shrunk"


_ACCESS_HINT = ("the photos are read from the task's images container: sign in with an identity that has Storage "
                "Blob Data Reader on that account (az login), or give its connection string with "
                "--source-connection (a SAS connection string with read permission will do)")
