"""A Zooniverse upload folder: a finished task's subject manifests with their photos beside them, each small enough
for Zooniverse, ready for the Panoptes CLI's ``upload-subjects``.

Why: the manifests name each photo by its blob name, and the Panoptes CLI reads a manifest's files relative to the
manifest's own folder and refuses any over 1 MiB (panoptes-cli ``commands/subject_set.py``: ``MAX_UPLOAD_FILE_SIZE =
1024 * 1024``; the Project Builder's limit is 1,000 KB). Camera-trap photos are mostly 2-6 MB, so the manual workflow
began with "Compress Images (Zooniverse has a size limit)" (Snapshot Safari's camera-trap-data-pipeline,
``image_compression.compress_images``) before its manifest and upload steps (../shared/reference/seeds/001). This
module is that step for trapbatch's manifests: it downloads every photo a chosen batch names from the task's own
images container, writes it under the manifest's folder at its blob name, and shrinks only the photos over the limit.

* Each photo as ``cli.photo_fit.fit`` makes it: within ``max_bytes`` (and ``max_side`` pixels when given), in a
  format Zooniverse takes, upright, without the EXIF/XMP/IPTC that may hold the camera's position (unless
  ``keep_metadata``); a photo already fit is written byte for byte (a JPEG less those segments).
* Resumable: a photo already in the folder and within the limit is not fetched again (so a run with other options
  leaves it as it was: start a fresh folder for that); files are written through ``<name>.part`` and renamed when
  whole, so an interrupted run leaves no half photo that looks complete.
* A photo that cannot be fetched (deleted since the task ran), decoded, or written under its name on this disk (a
  name the system cannot hold, or one that differs from another only in letter case on a disk that does not tell
  them apart) is named in ``<manifest>.problems.csv`` beside its manifest, and the command ends with exit 3 after
  doing the rest. Access refused, a full disk, a container that is not there, or 20 photos in a row that cannot be
  read (no network) stop at once, with what to do.

Blocking I/O on the operator's machine (it is the CLI); the size fitting (``fit``) is pure.
"""
from __future__ import annotations

import csv
import errno
import io
import os
import shlex
import stat
import subprocess
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Sequence

from cli.download import _fetch, _safe_join, local_paths, open_new, signed_in_client, within
from cli.errors import EXIT_API, EXIT_USAGE, CliError
from cli.photo_fit import COPIED, REENCODED, SHRUNK, Unfittable, fit
from core.zooniverse import IMAGE_COLUMN  # the manifests' own rule: a list's column never matches it
from gpu_batch.formats.detections_csv import spreadsheet_safe

# Under both limits: the Panoptes CLI's 1,048,576 bytes and the Project Builder's 1,000 KB.
MAX_BYTES = 1_000_000
PROBLEMS_SUFFIX = ".problems.csv"
VARIANTS = ("original", "repeats-removed")
FIRST_FAILURES = 20  # photos in a row whose storage cannot be reached: the network or the account is wrong
# writing errors that no other name would escape: stop rather than list every photo
FATAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM})


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


def upload_command(manifest: Path, columns: Sequence[int], missing: bool = False) -> str:
    """The Panoptes CLI line that uploads ``manifest``: its image columns named (else every cell that is an existing
    path is taken as a file: the ``folder`` and ``#file`` cells too), ``-M`` when a subject holds several photos
    (a shorter capture leaves its last cells empty) or some photos are ``missing`` (without it the upload stops at
    the first)."""
    flags = " ".join(f"-f {i + 1}" for i in columns) + (" -M" if len(columns) > 1 or missing else "")
    path = subprocess.list2cmdline([str(manifest)]) if os.name == "nt" else shlex.quote(str(manifest))
    return f"panoptes subject-set upload-subjects {flags} <subject set id> {path}"


@dataclass
class Prepared:
    """What one manifest's preparation did."""

    manifest: Path
    columns: list[int]
    photos: int = 0
    copied: int = 0  # written as they are (a JPEG less its position-bearing segments)
    shrunk: int = 0
    reencoded: int = 0  # decoded and written again at their size: another format, or turned upright
    kept: int = 0  # already in the folder from an earlier run
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def problems_file(self) -> Path:
        return self.manifest.with_name(self.manifest.stem + PROBLEMS_SUFFIX)


def manifests(answer: dict[str, Any], status: dict[str, Any], variant: str | None,
              batches: Iterable[int] = ()) -> tuple[str, list[tuple[str, str, str]]]:
    """(variant, [(container, manifest blob, its path in the results folder)]): the Zooniverse manifests of
    ``variant`` (None: the repeats-removed one when the task has it, it being the one whose repeats were dealt with,
    else the original), or of the batches numbered in ``batches`` only."""
    files = (answer.get("results") or {}).get("files") or {}
    if variant is None:
        variant = "repeats-removed" if "repeats-removed" in files else "original"
    if variant not in files:  # a --variant the task lacks is a bad argument (2), not an app that refused (4)
        raise CliError(f"the task has no {variant} results", f"choose --variant from: {', '.join(files) or 'none'}",
                       EXIT_USAGE)
    names = {blob for rel, blob in (files[variant].get("exports") or {}).items()
             if PurePosixPath(rel).parent.name == "zooniverse" and rel.endswith(".csv")}
    wanted = {f"batch-{n:03d}.csv" for n in batches}
    found = [(c, blob, path) for c, blob, path in local_paths(answer, status)
             if blob in names and (not wanted or PurePosixPath(blob).name in wanted)]
    absent = sorted(wanted - {PurePosixPath(blob).name for _, blob, _ in found})
    if not found or absent:  # a --batch the task lacks is a bad argument (2); no manifest at all, the task's (4)
        raise CliError(f"the task's {variant} results have no Zooniverse manifest"
                       + (f" {', '.join(absent)}" if absent else ""),
                       "a task's manifests are made when its exports ran with at least one image that did not "
                       f"fail; it has {len(names)}: trapbatch results {answer.get('id') or '<task id>'} downloads "
                       "them all", EXIT_USAGE if absent else EXIT_API)
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
    signed-in Azure identity against ``account_url``, only when that is an Azure Storage blob endpoint over https
    (``cli.download.signed_in_client``: the app's answer names it, and the token opens every account the user may
    read)."""
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
    return signed_in_client(account_url, "the images' storage account",
                            "give that account's connection string with --source-connection (or "
                            "TRAPBATCH_SOURCE_CONNECTION; a SAS one will do); if the task did not name that account "
                            "(its source_account_url), check that TRAPBATCH_URL (or --url) is your trapbatch app")


@dataclass(frozen=True)
class PhotoOptions:
    """How each photo is made fit (``cli.photo_fit.fit``)."""

    max_bytes: int = MAX_BYTES
    max_side: int | None = None
    keep_metadata: bool = False


class _Run:
    """What the photos of one ``prepare`` call share: the names seen (letter case folded, on a disk that does not
    tell cases apart; accents in one Unicode form, on a disk that does not tell forms apart) and the photos that
    could not be reached since the last one that could."""

    def __init__(self, case_blind: bool, form_blind: bool = False) -> None:
        self.lock = threading.Lock()
        self.case_blind = case_blind
        self.form_blind = form_blind
        self.folded: dict[tuple[Path, str], str] = {}
        self.unreached: list[tuple[str, str]] = []
        self.stopped = False  # a photo ended the run (CliError): the others still queued return at once

    def clashes(self, folder: Path, names: Sequence[str]) -> dict[str, str]:
        """Each of ``names`` that differs from a name before it (in this run, in manifest order, so the same one
        wins every run) only in letter case or in its accents' Unicode form (``é`` as one code point or as ``e`` and
        a combining accent: blob names are either), with that name, when the disk would take them for one file."""
        found: dict[str, str] = {}
        if self.case_blind or self.form_blind:
            for name in names:
                key = unicodedata.normalize("NFD", name) if self.form_blind else name
                if self.case_blind:
                    key = unicodedata.normalize("NFD", key.casefold()) if self.form_blind else key.casefold()
                other = self.folded.setdefault((folder, key), name)
                if other != name:
                    found[name] = other
        return found

    def reached(self, name: str, problem: str | None) -> None:
        """Note whether a photo's storage could be reached (``problem``: why not); ``CliError`` once
        ``FIRST_FAILURES`` photos in a row could not be (no network: not ten thousand identical problems)."""
        with self.lock:
            if problem is None:
                self.unreached.clear()
                return
            self.unreached.append((name, problem))
            if len(self.unreached) >= FIRST_FAILURES:
                self.stopped = True
                first = self.unreached[0]
                raise CliError(f"{FIRST_FAILURES} photos in a row could not be read (first: {first[0]}: {first[1]})",
                               "check the network and the images' account (--source-connection for another "
                               "account), then run the same command again")


def prepare(results_service: Any, source_service: Any, source_container: str,
            manifest_files: Sequence[tuple[str, str, str]], out: Path, options: PhotoOptions = PhotoOptions(),
            workers: int = 8, on_photo: Callable[[], None] | None = None,
            on_manifest: Callable[[Path, int], None] | None = None) -> list[Prepared]:
    """Download each manifest into ``out`` at its path, and every photo it names under the manifest's folder at its
    blob name, each made fit by ``options``, ``workers`` at a time. ``on_manifest(path, photos)`` before a
    manifest's photos, ``on_photo()`` after each."""
    done: list[Prepared] = []
    run: _Run | None = None
    for container, blob, path in manifest_files:
        manifest = _safe_join(out, path)
        _fetch(results_service, container, blob, manifest)
        if run is None:
            run = _Run(_case_blind(manifest.parent), _form_blind(manifest.parent))
        columns, photos = manifest_photos(manifest.read_text(encoding="utf-8"))
        report = Prepared(manifest, columns, photos=len(photos))
        if on_manifest:
            on_manifest(manifest, len(photos))
        folder = manifest.parent
        clashes = run.clashes(folder, photos)

        def one(name: str, report: Prepared = report, folder: Path = folder, run: _Run = run) -> None:
            if run.stopped:  # another photo ended the run: the queued ones are not fetched
                return
            if name in clashes:
                outcome, unreached = (f"differs from {clashes[name]!r} only in letter case or in its accents' Unicode "
                                      "form (NFC or NFD), and this disk takes them for one file: prepare this batch "
                                      "on a Linux disk"), None
            else:
                try:
                    outcome, unreached = _photo(source_service, source_container, name, folder, options)
                except CliError:
                    run.stopped = True
                    raise
            counter = COUNTERS.get(outcome)
            with run.lock:
                if counter:
                    setattr(report, counter, getattr(report, counter) + 1)
                else:
                    report.problems.append((name, outcome))
            if outcome != KEPT:
                run.reached(name, unreached)
            if on_photo:
                on_photo()

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(one, name) for name in photos]
            try:
                for future in futures:
                    future.result()  # an access refusal or a full disk (CliError) ends the command here
            except BaseException:  # that, or Ctrl-C: the photos not started are not fetched
                pool.shutdown(wait=True, cancel_futures=True)
                raise
        if report.problems:
            with open_new(report.problems_file) as fh:  # not through a link planted at its name
                fh.write(problems_csv(report.problems))
        else:
            report.problems_file.unlink(missing_ok=True)
        done.append(report)
    return done


def problems_csv(problems: Iterable[tuple[str, str]]) -> bytes:
    """``batch-NNN.problems.csv``: a row per photo that could not be prepared, sorted. A table people open in a
    spreadsheet, so each cell has the exports' CSV guard (``detections_csv.spreadsheet_safe``: a photo named
    ``=HYPERLINK(...)`` stays text; a cell that starts with ``'`` had one added, remove one)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["photo", "problem"])
    writer.writerows([spreadsheet_safe(name), spreadsheet_safe(problem)] for name, problem in sorted(problems))
    return text.getvalue().encode("utf-8")


KEPT = "kept"
COUNTERS = {COPIED: "copied", SHRUNK: "shrunk", REENCODED: "reencoded", KEPT: "kept"}  # outcome -> Prepared's count


def _case_blind(folder: Path) -> bool:
    """Whether the disk under ``folder`` takes names that differ only in letter case for one file (macOS and
    Windows by default)."""
    probe = folder / ".trapbatch-Case-Probe"
    try:
        open_new(probe).close()  # touch() would create or touch whatever a link planted at the name points to
        return (folder / ".trapbatch-cASE-pROBE").exists()
    finally:
        probe.unlink(missing_ok=True)


def _form_blind(folder: Path) -> bool:
    """Whether the disk under ``folder`` takes names whose accents differ only in Unicode form for one file (macOS:
    APFS ignores the form, HFS+ stores every name decomposed)."""
    probe = folder / ".trapbatch-form-probe-\u00e9"
    try:
        open_new(probe).close()
    except OSError:  # a disk that cannot hold the name cannot hold such photos either: they are refused one by one
        return False
    try:
        return (folder / ".trapbatch-form-probe-e\u0301").exists()
    finally:
        probe.unlink(missing_ok=True)


def photo_path(folder: Path, name: str) -> Path | None:
    """Where photo ``name`` goes under ``folder`` (as the Panoptes CLI joins the manifest's folder and the cell), or
    None for a name that would leave the folder or that this system cannot hold as a path. Names are the user's
    own, so only what this system refuses is refused (``cli.download._safe_join`` holds trapbatch's own file names
    to every system's rules). On every system a path whose folders a symbolic link already under ``folder`` leads
    out of is refused too (``within``): the photo would be written wherever the link points."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or name.startswith("/") or any(ord(c) < 32 for c in name):
        return None
    if os.name == "nt":
        try:
            return _safe_join(folder, name)
        except CliError:
            return None
    dest = folder.joinpath(*parts)
    return dest if within(folder, dest) else None


def _photo(service: Any, container: str, name: str, folder: Path, options: PhotoOptions) -> tuple[str, str | None]:
    """Put photo ``name`` under ``folder``: (``COPIED``, ``SHRUNK``, ``REENCODED`` or ``KEPT`` (there already,
    within the limit), or what stood in the way; why the storage could not be reached, None when it could or was
    not asked)."""
    from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

    dest = photo_path(folder, name)
    if dest is None:
        return ("a name that would leave the folder (or a symbolic link in the folder leads out of it) or that this "
                "system cannot hold as a file"), None
    try:
        found = dest.lstat()  # a link is not the photo (nor uploaded as it): it is replaced
        if stat.S_ISREG(found.st_mode) and 0 < found.st_size <= options.max_bytes:
            return KEPT, None
    except FileNotFoundError:
        pass
    except OSError as exc:  # a file where a folder must be, a name too long
        return f"cannot be written under its name here: {exc.strerror or exc}", None
    try:
        data = service.get_blob_client(container, name).download_blob().readall()
    except ResourceNotFoundError as exc:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            raise CliError(f"container {container!r} does not exist in the images' account",
                           "the task's images were moved or deleted, or this is not their account: give it with "
                           "--source-connection") from None
        return "not found in the images' container (deleted or moved since the task ran?)", None
    except ClientAuthenticationError as exc:
        raise CliError(f"not allowed to read {container}/{name} ({type(exc).__name__})", _ACCESS_HINT) from None
    except HttpResponseError as exc:
        if exc.status_code == 403:
            raise CliError(f"not allowed to read {container}/{name} (403)", _ACCESS_HINT) from None
        reason = f"reading it failed: {exc.status_code} {exc.reason}"
        return reason, reason
    except AzureError as exc:  # the connection, after the SDK's own retries
        reason = f"reading it failed: {type(exc).__name__}"
        return reason, reason
    try:
        fitted, how = fit(data, options.max_bytes, options.max_side, options.keep_metadata)
    except Unfittable as exc:
        return str(exc), None
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise on one photo is that photo's problem
        return f"cannot be prepared: {type(exc).__name__}: {exc}", None
    partial = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_new(partial) as fh:  # not through a link planted at the name
            fh.write(fitted)
    except OSError as exc:
        _unlink_quietly(partial)
        if exc.errno in FATAL_WRITE_ERRORS:
            raise CliError(f"cannot write {partial}: {exc.strerror or exc}",
                           "free space, or choose a folder you may write with --out, then run the same command "
                           "again") from None
        return f"cannot be written under its name here: {exc.strerror or exc}", None
    try:
        partial.replace(dest)
    except OSError as exc:  # a folder at its path, or (Windows) the file held open by a viewer or a scanner
        _unlink_quietly(partial)
        return f"cannot be written under its name here: {exc.strerror or exc}", None
    return how, None


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


_ACCESS_HINT = ("the photos are read from the task's images container: sign in with an identity that has Storage "
                "Blob Data Reader on that account (az login), or give its connection string with "
                "--source-connection (a SAS connection string with read permission will do)")
