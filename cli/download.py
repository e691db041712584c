"""A finished task's files, out of blob storage into a folder: results JSON, CSV, every export and list the API
names, and (on request) the preview site.

Which blobs: exactly the names ``GET /api/tasks/{id}/results`` returns (``results``: ``blob``, ``csv`` and any other
blob name it lists, such as exports) and the status's ``repeated_detections.blob``, so the CLI never guesses the
layout. How: with a connection string when one is configured (Azurite locally; ``--storage-connection`` /
``TRAPBATCH_STORAGE_CONNECTION``), otherwise with the signed-in Azure identity (``DefaultAzureCredential``: az login,
a managed identity...) against the account in the results' ``url``; that identity needs Storage Blob Data Reader.
Its token opens every storage account the user may read, so it goes only to an Azure Storage blob endpoint over https
(``sign_in_endpoint``), never to whatever host the app's answer names (a wrong or hostile ``TRAPBATCH_URL``).
Where: each file at its path under the results folder (``local_paths``): by file name alone, the variants' exports
(``exports/coco.json``, ``exports/repeats-removed/coco.json``) overwrote each other, and one was silently lost.
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import stat
import time
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator, NamedTuple
from urllib.parse import urlsplit

from cli.errors import CliError

NOT_BLOB_NAMES = ("container", "url")  # keys of the results answer that are not blob names


# Where a token of the user's Azure sign-in (audience storage.azure.com, good on every account the user may read) may
# go: Azure Storage blob endpoints of the public, US Government and China clouds (learn.microsoft.com, "Storage
# account overview", standard endpoints). A local Azurite (http or https on a loopback host) is reached only with a
# connection string, which names its own endpoint: never with a token.
BLOB_ENDPOINT_SUFFIXES = (".blob.core.windows.net", ".blob.core.usgovcloudapi.net", ".blob.core.chinacloudapi.cn")
_ACCOUNT_NAME = re.compile(r"[a-z0-9]{3,24}(-secondary)?")  # an account (3-24 letters, digits) or its read replica
# An account made with Azure DNS zone endpoints (preview, retiring in 2027): https://<account>.z[00-99].blob.storage.
# azure.net ("Query for a Blob Storage endpoint using the Azure Storage management library").
_DNS_ZONE_ENDPOINT = re.compile(r"[a-z0-9]{3,24}(-secondary)?\.z[0-9]{2}\.blob\.storage\.azure\.net")


def sign_in_endpoint(url: str) -> str | None:
    """``https://<account>.blob.<cloud's suffix>`` of ``url`` when it is an https Azure Storage blob endpoint, the only
    hosts the user's sign-in is sent to; None for any other (the client is built from the host alone, so a path,
    port or user part of ``url`` takes it nowhere else)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
    except ValueError:  # not a URL (an unbalanced IPv6 bracket...)
        return None
    for suffix in BLOB_ENDPOINT_SUFFIXES:
        if parts.scheme == "https" and host.endswith(suffix) and _ACCOUNT_NAME.fullmatch(host[: -len(suffix)]):
            return f"https://{host}"
    if parts.scheme == "https" and _DNS_ZONE_ENDPOINT.fullmatch(host):
        return f"https://{host}"
    return None


def shown_host(url: str) -> str:
    """``scheme://host`` of ``url`` for a message: no path or query (a SAS token) is printed."""
    try:
        parts = urlsplit(url.strip())
        return f"{parts.scheme}://{parts.hostname or ''}" if parts.scheme else repr(url[:80])
    except ValueError:
        return repr(url[:80])


def signed_in_client(url: str, names: str, hint: str) -> Any:
    """A client for ``url``'s account with the user's Azure sign-in, or CliError (before any credential is made
    or anything sent) when ``url`` is not an Azure Storage blob endpoint: the app's answer named it (``names``: what
    as), and a wrong or hostile app would otherwise receive a token valid on every account the user may read."""
    endpoint = sign_in_endpoint(url)
    if endpoint is None:
        raise CliError(f"refusing to send your Azure sign-in to {shown_host(url)}, which the app names as {names}: "
                       "it is no Azure Storage blob endpoint over https (https://<account>"
                       + ", ".join(BLOB_ENDPOINT_SUFFIXES) + ")", hint)
    from azure.identity import DefaultAzureCredential
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(endpoint, credential=DefaultAzureCredential())


def blob_service(connection: str, results_url: str) -> Any:
    """A client for the results' account: ``connection`` when given (it names its own endpoint: Azurite locally),
    else the user's Azure sign-in against the account in ``results_url`` (the results answer's ``url``), only when
    that is an Azure Storage blob endpoint (``signed_in_client``)."""
    from azure.storage.blob import BlobServiceClient

    if connection:
        try:
            return BlobServiceClient.from_connection_string(connection)
        except ValueError:
            raise CliError("the storage connection string is not one",
                           "give the account's connection string (Azurite: the one devhost was started with), or "
                           "leave it out to use your Azure sign-in") from None
    if not results_url.strip():
        raise CliError("no way to read the results' storage account",
                       "set TRAPBATCH_STORAGE_CONNECTION (or --storage-connection) to the account's connection "
                       "string; for a local devhost, the Azurite connection string it was started with")
    return signed_in_client(results_url, "its results' storage account",
                            "check that TRAPBATCH_URL (or --url) is your trapbatch app; to read that account anyway "
                            "(a local devhost's Azurite, a private endpoint), give its connection string with "
                            "--storage-connection (or TRAPBATCH_STORAGE_CONNECTION)")


def result_blobs(results: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str]]:
    """(container, blob) of every file the API names for a finished task, de-duplicated, in a stable order."""
    ref = results.get("results") or {}
    container = str(ref.get("container") or "")
    names: list[str] = []

    def add(value: Any) -> None:
        if isinstance(value, str) and value and "://" not in value:
            names.append(value)
        elif isinstance(value, dict):
            for v in value.values():
                add(v)
        elif isinstance(value, list):
            for v in value:
                add(v)

    for key, value in ref.items():
        if key not in NOT_BLOB_NAMES:
            add(value)
    add((status.get("repeated_detections") or {}).get("blob"))
    return [(container, n) for n in dict.fromkeys(names)] if container else []


# A new file, never one already at the name: O_EXCL fails on any entry there, a symbolic link included (POSIX open:
# "If O_CREAT and O_EXCL are set ... a symbolic link ... shall fail"; Windows' CREATE_NEW likewise); O_NOFOLLOW where
# the system has it (not Windows), O_BINARY where it matters (Windows: no newline translation).
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def open_new(path: Path) -> io.BufferedWriter:
    """``path`` opened for writing as a new, empty file. Why: an output folder may hold a symbolic link planted at a
    name the CLI writes (``detections.json.part -> ../../.bashrc``, from an unpacked archive or another user), and
    opening it as usual writes through the link to wherever it points. So whatever is at the name (a file from an
    interrupted run, or a link) is removed first (the link itself, never its target), and the open refuses anything
    that appears there meanwhile."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    return os.fdopen(os.open(path, _NEW_FILE, 0o666), "wb")


def open_existing(path: Path) -> io.BufferedWriter:
    """``path``, a regular file already there (an interrupted download's ``.part``), opened to append to it, never
    through a symbolic link (``O_NOFOLLOW`` where the system has it; what was opened is checked to be a regular file
    either way)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IsADirectoryError(f"{path} is no regular file")
    return os.fdopen(fd, "ab")


def _regular_size(path: Path) -> int | None:
    """The size of the regular file at ``path`` itself, None when there is none: a symbolic link is no file of the
    download's (it is replaced, never taken for the copy already fetched), whatever it points to."""
    try:
        found = path.lstat()
    except OSError:
        return None
    return found.st_size if stat.S_ISREG(found.st_mode) else None


# Bytes read from the service at a time (its 4 MiB ranges, up to 4 at once) and written in order, so an interrupted
# download's ``.part`` is always the blob's first bytes; a blob larger than this keeps its ``.part`` for a resume.
WINDOW = 16 * 1024 * 1024
# The last bytes of an interrupted download's ``.part`` that are read again from the blob (one ranged Get Blob, under
# the ``.part``'s ETag) and compared before it is resumed (``_tail_matches``): after a power loss or an OS crash a
# file's length can have reached the disk without its last pages, which then read as zeros or stale bytes.
CHECK_TAIL = 4 * 1024 * 1024
# Seconds between the times a resumable download's ``.part`` is flushed to the disk (fsync) and the length that is now
# surely there recorded (``FetchedEtags.record``'s ``durable``), and so how much a power loss can cost: a resume trusts
# no byte past that length. By time, not bytes: an fsync per window would wait on the disk most often on a fast link,
# where a lost window is cheap, while on a field station's link a window takes minutes. A download that stops (Ctrl-C,
# an error) records its whole length.
CHECKPOINT_S = 10.0


def _amount(size: int) -> str:
    """``size`` bytes for a person: ``"3,000 bytes"``, ``"1,234.5 MiB"``."""
    return f"{size:,} bytes" if size < 1024 * 1024 else f"{size / (1024 * 1024):,.1f} MiB"


def _tail_matches(blob: Any, partial: Path, done: int, etag: str) -> bool:
    """Whether the last ``min(done, CHECK_TAIL)`` bytes of the ``.part`` (``done`` bytes long) are the blob's bytes
    there, as the blob is at ``etag`` (If-Match: ``ResourceModifiedError`` when it changed since). Why: resuming from
    a ``.part`` whose tail never reached the disk (zeros, stale pages after a power loss) kept that garbage inside a
    results file that then looked complete; this costs one small read against the gigabytes the resume saves."""
    from azure.core import MatchConditions

    span = min(done, CHECK_TAIL)
    fd = os.open(partial, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        fh.seek(done - span)
        mine = fh.read(span)
    theirs = blob.download_blob(offset=done - span, length=span, etag=etag,
                                match_condition=MatchConditions.IfNotModified).readall()
    return bytes(mine) == bytes(theirs)


def _content_md5(properties: Any) -> bytes | None:
    """The blob's whole Content-MD5 as a download's properties carry it, None when it has none. Azure returns it on
    every Get Blob, a ranged one (a resume) included, as ``x-ms-blob-content-md5`` (learn.microsoft.com, "Get Blob"
    response headers); Put Blob stores one computed by the service, Put Block List only one the writer sends, which
    trapbatch's own writer (``adapters.block_writer``) does not: a results file over 4 MiB has none (Azurite alike)."""
    value = getattr(getattr(properties, "content_settings", None), "content_md5", None)
    return bytes(value) if value else None


def _md5_of(path: Path) -> bytes:
    """The MD5 of the file at ``path`` as it reads back from the disk, a window at a time."""
    digest = hashlib.md5(usedforsecurity=False)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(WINDOW):
            digest.update(chunk)
    return digest.digest()


def _checkpoint(fh: io.BufferedWriter, known: FetchedEtags, partial: Path, key: str, etag: str) -> None:
    """Flush the ``.part`` to the disk, then record its length as durable (only then: a record read after a power
    loss never names a length whose bytes were still in memory). ``OSError`` (a full disk) records nothing: the last
    checkpoint's length stands."""
    try:
        fh.flush()
        os.fsync(fh.fileno())
        known.record(partial, key, etag, durable=fh.tell())
        known.save()
    except OSError:
        pass


def _fetch(service: Any, container: str, name: str, dest: Path, known: FetchedEtags | None = None,
           say: Callable[[str], None] | None = None) -> bool:
    """Stream one blob into ``dest`` (through ``<dest>.part``, renamed when whole: an interrupted download leaves no
    file that looks complete), a window at a time: a ten-million-image task's results and COCO file are gigabytes.
    ``known``: what earlier downloads wrote into the folder (``FetchedEtags``); without it, nothing is resumed.

    * A blob whose ETag and size are those of the copy this folder's downloads wrote at ``dest`` is not fetched
      again (False), so running a download that failed part-way again skips the files it finished.
    * A ``.part`` of a blob larger than ``WINDOW`` is kept when the download stops (Ctrl-C, a network drop past the
      SDK's retries, a full disk) and the next run asks only for the rest, while the blob's ETag is the one the
      ``.part`` was read from (``If-Match``); a blob changed meanwhile is read from the start. Why: gigabytes over a
      field station's link were read again from byte 0 after every interruption. The ``.part``'s last bytes are
      first compared with the blob's (``_tail_matches``); a ``.part`` that does not match (torn by a power loss) is
      not trusted: the blob is read from the start. ``say`` (a line for a person) is told which happened.
    * Only the ``.part``'s length recorded as flushed to the disk is resumed (``CHECKPOINT_S``); bytes past it are
      cut off and read again. Why: after a power loss the pages lost need not be the last ones (the tail check alone
      passed a ``.part`` whose middle held zeros); a ``.part`` recorded by an older CLI has only the tail check.
    * What is written is checked against the blob's size, and flushed to the disk, before the rename: a file renamed
      and recorded as the blob's is never one whose bytes a power loss then took (it would read ``unchanged``).
    * Where the blob carries a Content-MD5 (``_content_md5``), the whole file is checked against it before the rename:
      a resumed one that does not match is read again from the start (torn where no check above looked), a fresh one
      is an error.

    Nothing is written through a symbolic link at either name (``open_new``, ``open_existing``; the rename replaces
    a link at ``dest``, not what it points to); ``dest``'s folders are the caller's to check (``_safe_join``)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import (AzureError, ClientAuthenticationError, HttpResponseError,
                                       ResourceModifiedError, ResourceNotFoundError)

    partial = dest.with_name(dest.name + ".part")
    keep = False  # whether the .part stays for the next run to resume
    try:
        blob = service.get_blob_client(container, name)
        key = f"{container}/{name}"
        size = _regular_size(dest)
        have = known.etag(dest, key) if known is not None else None
        part_etag = known.etag(partial, key) if known is not None else None
        found = (_regular_size(partial) or 0) if part_etag else 0
        durable = known.durable(partial, key) if known is not None else None
        done = found if durable is None else min(found, durable)  # past ``durable``: maybe never on the disk
        if (have and size is not None) or done:
            props = blob.get_blob_properties()
            if have == str(props.etag) and size == props.size:
                return False
            if part_etag != str(props.etag) or done >= props.size:
                done = 0  # changed since, or whole but not renamed: read it all again
            elif _tail_matches(blob, partial, done, str(part_etag)):
                if say is not None:
                    say(f"{dest}: resumed at {_amount(done)} of {_amount(props.size)} after checking the last "
                        f"{_amount(min(done, CHECK_TAIL))}" + (f"; the {_amount(found - done)} after it, not yet "
                                                               "flushed to the disk when the download stopped, "
                                                               "are read again" if found > done else ""))
            else:
                done = 0
                if say is not None:
                    say(f"{dest}: the partial download did not match the results; started over")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if done:
            fh = open_existing(partial)
            if found > done:
                os.ftruncate(fh.fileno(), done)
                fh.seek(0, os.SEEK_END)
            downloader = blob.download_blob(offset=done, max_concurrency=4, etag=part_etag,
                                            match_condition=MatchConditions.IfNotModified)
        else:
            fh = open_new(partial)
            downloader = blob.download_blob(max_concurrency=4)
        with fh:
            etag = str(getattr(downloader.properties, "etag", "") or "")
            resumable = known if known is not None and downloader.size > WINDOW else None
            if resumable is not None:
                resumable.record(partial, key, etag, durable=done)
                resumable.save()
                keep = True
            synced = time.monotonic()
            try:
                while data := downloader.read(WINDOW):
                    fh.write(data)
                    if resumable is not None and time.monotonic() - synced >= CHECKPOINT_S:
                        _checkpoint(fh, resumable, partial, key, etag)
                        synced = time.monotonic()
            except BaseException:
                if resumable is not None:  # stopped, not crashed: what was written is the blob's
                    _checkpoint(fh, resumable, partial, key, etag)
                raise
            fh.flush()
            os.fsync(fh.fileno())
            written = fh.tell()
        if written != done + downloader.size:
            keep = False
            raise CliError(f"{key}: {written} bytes written to {partial}, the blob has {done + downloader.size}",
                           "run the same command again: it reads the file from the start")
        md5 = _content_md5(downloader.properties)
        if md5 is not None and _md5_of(partial) != md5:
            keep = False
            if not done:
                raise CliError(f"{key}: the downloaded file does not match the blob's Content-MD5",
                               "run the same command again; if it says so again, the blob's Content-MD5 property "
                               "is not its content's (set by whoever wrote it)")
            if say is not None:
                say(f"{dest}: the partial download did not match the results; started over")
        else:
            partial.replace(dest)
            if known is not None:
                known.forget(partial)
                known.record(dest, key, etag)
            return True
    except ResourceNotFoundError:
        raise CliError(f"blob {container}/{name} does not exist", "the task's files may have been deleted; "
                       "check the storage account") from None
    except ResourceModifiedError:  # If-Match: the blob was rewritten (a re-render's CSV...) while it was read
        keep = False
        raise CliError(f"{container}/{name} changed while it was downloaded",
                       "run the same command again: it fetches the file as it is now") from None
    except ClientAuthenticationError as exc:
        raise CliError(f"not allowed to read {container}/{name} ({type(exc).__name__})",
                       "sign in with an identity that has Storage Blob Data Reader on the account (az login), or "
                       "give its connection string (TRAPBATCH_STORAGE_CONNECTION)") from None
    except HttpResponseError as exc:
        raise CliError(f"reading {container}/{name} failed: {exc.status_code} {exc.reason}",
                       "check TRAPBATCH_STORAGE_CONNECTION / your Azure sign-in, then retry") from None
    except AzureError as exc:  # the connection, after the SDK's own retries (ServiceRequestError...)
        raise CliError(f"reading {container}/{name} failed: {type(exc).__name__}",
                       "check the network and the storage address (TRAPBATCH_STORAGE_CONNECTION or the account "
                       "the app names), then run the same command again (it resumes a large file where it "
                       "stopped)") from None
    except PermissionError as exc:  # Windows: the file is open in another program (Excel holds a CSV it shows)
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}",
                       "close the program that has the file open (a spreadsheet showing the CSV), or check the "
                       "folder's permissions or choose another --out folder, then run the same command again") from None
    except OSError as exc:  # the local side: a full disk, a read-only one
        full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        raise CliError(f"cannot write {dest}: {exc.strerror or exc}",
                       ("free space or choose another --out folder" if full else
                        "choose another --out folder, one you can write to") + ", then run the same command again"
                       ) from None
    finally:
        if not keep:
            try:
                partial.unlink(missing_ok=True)
            except OSError:  # a read-only folder refuses even this (EROFS): its traceback hid the error above
                pass
            if known is not None:
                known.forget(partial)
    # only a resumed file that did not match its Content-MD5 gets here, its .part gone: read it from the start
    return _fetch(service, container, name, dest, known, say)


def _list(service: Any, container: str, prefix: str) -> list[str]:
    from azure.core.exceptions import AzureError

    try:
        return [str(blob.name) for blob in service.get_container_client(container).list_blobs(name_starts_with=prefix)]
    except AzureError as exc:
        raise CliError(f"listing {container}/{prefix} failed: {type(exc).__name__}",
                       "check the network and your Azure sign-in (Storage Blob Data Reader), then run the same "
                       "command again") from None


# What no file name may hold on Windows (a drive letter's ':' included: "a:b.json" is b.json on drive a:), and its
# reserved device names, which open the device whatever the extension (learn.microsoft.com, "Naming Files, Paths,
# and Namespaces"). Checked on every system, so a folder written on Linux copies to Windows as it is.
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*\\')
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})


def _safe_join(root: Path, relative: str, top: Path | None = None) -> Path:
    """``root / relative`` for a blob name, refusing names that would leave ``root`` on any system, or that Windows
    cannot hold (a backslash is a folder separator there: ``exports\\..\\..\\x`` would leave ``root``), and a path
    whose folders a symbolic link (or a Windows junction) already in the folder leads out of ``top`` (default
    ``root``: the folder the user chose, which may itself be a link), which the file would be renamed into."""
    parts = [p for p in PurePosixPath(relative).parts if p not in ("", ".")]
    bad = (not parts or ".." in parts or relative.startswith("/")
           or any(c in _WINDOWS_FORBIDDEN or ord(c) < 32 for c in relative)
           or any(p.split(".")[0].upper() in _WINDOWS_DEVICES or p.endswith((" ", ".")) for p in parts))
    dest = root.joinpath(*parts)
    if bad:
        raise CliError(f"refusing to write blob name {relative!r} under {root}: it would leave the folder or is no "
                       "file name Windows can hold", "report this: trapbatch names its files itself")
    if not within(top or root, dest):
        raise CliError(f"refusing to write {dest}: a symbolic link (or junction) in {top or root} leads out of it",
                       "remove the link, or choose another --out folder, then run the same command again")
    return dest


def within(top: Path, dest: Path) -> bool:
    """Whether a file renamed to ``dest`` lands inside ``top``: ``dest``'s folder, its links followed, is in ``top``'s.
    A link at ``dest`` itself is no way out: the rename replaces the link."""
    return dest.parent.resolve().is_relative_to(top.resolve())


def local_paths(results: dict[str, Any], status: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(container, blob, path in the folder) of every file ``result_blobs`` names: its path under the results'
    folder (``results/<task>/``, a re-run's ``results/<task>/runs/<run>/``), as the results zip holds it, so the
    variants' exports of the same name (``exports/coco.json``, ``exports/repeats-removed/coco.json``) stay apart; a
    blob outside that folder by its file name."""
    main = str((results.get("results") or {}).get("blob") or "")
    prefix = main.rsplit("/", 1)[0] + "/" if "/" in main else ""
    paths = [(c, n, n[len(prefix):] if prefix and n.startswith(prefix) else PurePosixPath(n).name)
             for c, n in result_blobs(results, status)]
    seen: dict[str, str] = {}
    for _, name, path in paths:
        if seen.setdefault(path, name) != name:
            raise CliError(f"two files would be written to {path} ({seen[path]} and {name})",
                           "report this: it is a bug")
    return paths


class Fetched(NamedTuple):
    """A file of the download: where it is, and whether this run wrote it (False: the copy already there is the
    blob's, by its ETag and size, so a person reading ``wrote`` is not told of a download that did not happen)."""

    path: Path
    written: bool


def download(service: Any, results: dict[str, Any], status: dict[str, Any], out: Path,
             previews: bool = False, say: Callable[[str], None] | None = None) -> list[Fetched]:
    """Write the task's files into ``out`` (at their paths under the results folder, ``local_paths``; previews
    under ``out/previews``). ``say``: where a line on a resumed (or not resumed) download goes (``_fetch``)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out}: {exc.strerror or exc}", "choose another --out folder") from None
    files: list[Fetched] = []
    with FetchedEtags(out) as known:
        for container, name, path in local_paths(results, status):
            dest = _safe_join(out, path)
            files.append(Fetched(dest, _fetch(service, container, name, dest, known, say)))
            known.save()
        page = results.get("previews") or {}
        if previews and page.get("folder"):
            folder = str(page["folder"])
            for name in _list(service, str(page["container"]), folder + "/"):
                dest = _safe_join(out / "previews", name[len(folder) + 1:], top=out)
                files.append(Fetched(dest, _fetch(service, str(page["container"]), name, dest, known, say)))
    return files


def earlier_files(out: Path, files: list[Fetched], pages_of: str | None = None) -> list[str]:
    """Files in ``out`` that an earlier download wrote (``.trapbatch-downloads.json``) and this one did not: another
    task's or an earlier run's files (its repeats-removed variant, its exports, its preview pages), which sat among
    this download's without a word. Paths relative to ``out``, in name order; the ones still there only.

    ``pages_of``: a task id, for a download without the preview pages: the pages an earlier download of that task
    wrote under ``previews/`` are its own and not named; another task's are (they were left out of the list, so
    task B's results sat beside task A's preview page, which the list called nothing)."""
    now = {f.path.relative_to(out).as_posix() for f in files}
    recorded = FetchedEtags(out).files

    def own_page(path: str) -> bool:  # a page blob is <website container>/<task id>-<random>/...
        folder = recorded[path]["blob"].split("/", 2)[1:2]
        return (pages_of is not None and path.startswith("previews/") and bool(folder)
                and folder[0].startswith(pages_of + "-"))

    return sorted(p for p in recorded if p not in now and (out / p).is_file() and not own_page(p))


def blob_generation(blob: str, task_id: str) -> str | None:
    """The generation of task ``task_id`` whose file ``blob`` (``container/name``, as ``.trapbatch-downloads.json``
    records it) is: "" for its first run, the run id for a re-run's (``gpu_batch.layout.generation_key``: results
    under ``results/<task>/runs/<run>/``, preview pages under ``<task>-runs-<run>-<random>/``); None when it is not
    the task's (another task's, or a record without a blob name)."""
    name = blob.split("/", 1)[1] if "/" in blob else ""
    if name.startswith(f"results/{task_id}/"):
        rest = name[len(f"results/{task_id}/"):].split("/")
        return rest[1] if len(rest) > 2 and rest[0] == "runs" else ""
    folder = name.split("/", 1)[0]
    if folder.startswith(task_id + "-"):  # a preview folder, download_label(key) + "-<random>"
        rest = folder[len(task_id) + 1:].split("-")
        return rest[1] if len(rest) > 2 and rest[0] == "runs" else ""
    return None


def earlier_own_files(out: Path, paths: list[str], task_id: str) -> dict[str, list[str]]:
    """Those of ``paths`` (``earlier_files``' answer) that are task ``task_id``'s own files, by the generation they
    are of (``blob_generation``: "" for its first run); the rest are another task's.

    Why: a re-run (``--only-new``) replaces the task's results with its own generation's; a file of the generation
    before it (a CSV at another threshold that a re-render made) is still the task's, and was called "not this
    task's (now)", which sent the reader looking for another task."""
    recorded = FetchedEtags(out).files
    own: dict[str, list[str]] = {}
    for path in paths:
        generation = blob_generation(str(recorded.get(path, {}).get("blob", "")), task_id)
        if generation is not None:
            own.setdefault(generation, []).append(path)
    return own


class FetchedEtags:
    """What this folder's downloads wrote (``.trapbatch-downloads.json``): for each file, by its path in the folder,
    the blob it holds and that blob's ETag; for an interrupted large download's ``<name>.part``, the same of the bytes
    it holds and how many of them were flushed to the disk (``durable``: a resume trusts no byte past it; an older
    CLI reading the record ignores it). So the same command run again after a failure part-way (a dropped connection
    at file 7 of 10, a COCO file of gigabytes) fetches only what is missing or has changed since, and resumes a
    ``.part``.

    By path, not by blob: another task's (or generation's) download into the same folder writes its own
    ``detections.json`` there, and a record by blob alone then took that file for the first task's whenever the sizes
    matched. The first format (blob -> ETag) is still read, for a path this format has no record of. Saved after
    each file and at the end; unreadable: everything is fetched."""

    FILE = ".trapbatch-downloads.json"
    VERSION = 2

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / self.FILE
        try:
            loaded = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            loaded = {}
        loaded = loaded if isinstance(loaded, dict) else {}
        self.files: dict[str, dict[str, Any]] = {}  # path -> blob, etag (and a .part's durable length)
        self.legacy: dict[str, str] = {}
        if loaded.get("version") == self.VERSION and isinstance(loaded.get("files"), dict):
            self.files = {str(k): {"blob": str(v.get("blob", "")), "etag": str(v.get("etag", "")),
                                   **({"durable": v["durable"]} if type(v.get("durable")) is int and v["durable"] >= 0
                                      else {})}
                          for k, v in loaded["files"].items() if isinstance(v, dict)}
            legacy = loaded.get("legacy")
            self.legacy = {str(k): str(v) for k, v in legacy.items()} if isinstance(legacy, dict) else {}
        elif "version" not in loaded:
            self.legacy = {str(k): str(v) for k, v in loaded.items()}

    def _key(self, path: Path) -> str:
        return path.relative_to(self.out).as_posix()

    def etag(self, path: Path, blob: str) -> str | None:
        """The ETag of ``blob`` (``container/name``) whose bytes a download wrote at ``path``; None when ``path``
        holds another blob's, or nothing this folder's downloads recorded."""
        found = self.files.get(self._key(path))
        if found is not None:
            return found["etag"] if found["blob"] == blob else None
        return None if path.name.endswith(".part") else self.legacy.get(blob)

    def durable(self, path: Path, blob: str) -> int | None:
        """How many of the ``.part``'s bytes at ``path`` (of ``blob``) were flushed to the disk (``_checkpoint``);
        None when the record has no such length (an older CLI's): then all of them are taken, tail-checked."""
        found = self.files.get(self._key(path))
        if found is None or found["blob"] != blob:
            return None
        value = found.get("durable")
        return value if isinstance(value, int) else None

    def record(self, path: Path, blob: str, etag: str, durable: int | None = None) -> None:
        """``path`` holds ``blob``'s bytes at ``etag``; for a ``.part``, ``durable`` of them surely on the disk."""
        self.files[self._key(path)] = {"blob": blob, "etag": etag, **({"durable": durable} if durable is not None
                                                                      else {})}
        self.legacy.pop(blob, None)

    def forget(self, path: Path) -> None:
        self.files.pop(self._key(path), None)

    def save(self) -> None:
        try:
            partial = self.path.with_name(self.path.name + ".part")
            with open_new(partial) as fh:  # not through a link planted at the name
                kept: dict[str, Any] = {"version": self.VERSION, "files": self.files}
                if self.legacy:
                    kept["legacy"] = self.legacy
                fh.write(json.dumps(kept, indent=0, sort_keys=True).encode("utf-8"))
                fh.flush()
                os.fsync(fh.fileno())  # renamed unflushed, a power loss could leave the record empty: all read again
            partial.replace(self.path)
        except OSError:  # only the resume is lost: the files themselves are written
            pass

    def __enter__(self) -> "FetchedEtags":
        return self

    def __exit__(self, *exc: object) -> None:
        self.save()
