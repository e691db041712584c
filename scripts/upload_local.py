"""Upload a folder of photos into a container of a local storage emulator (Azurite), for trying trapbatch locally.

Why a script: on Azure, photos go up with azcopy or Storage Explorer (docs/deploy.md); locally neither is installed
here, and devhost reads its images from Azurite. Each file keeps its path relative to the folder as its blob name
(``camera-01/IMG_0001.JPG``), the layout trapbatch reads cameras and folders from. Files already there with the same
size, and not changed on disk since they were uploaded (the file's modification time then is kept in the blob's
metadata), are skipped, so running it again after an interruption uploads only what is missing, and again after
correcting a file (an image list, a request) uploads that file. A file whose time moved but whose bytes did not (a
FAT/exFAT card after a daylight-saving change, a copy that resets times, ``touch``) is skipped too when its MD5 is the
blob's Content-MD5; its blob then keeps the new time, so the next run does not read it again.

    .venv/bin/python -m scripts.upload_local my-camera-traps /path/to/photos [--prefix 2024/site-a/]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceModifiedError, ResourceNotFoundError
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient, ContentSettings

if __name__ == "__main__" and not __package__:  # run as a file (python scripts/upload_local.py), not with -m:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project's packages are beside scripts/

from gpu_batch.layout import (INCOMING_CONTAINER, READY_MARKER, ready_error_blob,  # noqa: E402 - after the path
                              ready_receipt_blob)

LOCAL_STORAGE = "UseDevelopmentStorage=true"  # Azurite on its default ports, as devhost --with-azurite starts it
PARALLEL_UPLOADS = 8
# A blob's Last-Modified has whole seconds (RFC 1123): a file written in the second of its upload is not newer
LAST_MODIFIED_SLACK_S = 2.0
# Blob metadata: the file's st_mtime_ns when it was uploaded. Why not compare the file's time with the blob's
# Last-Modified alone: photos copied from a card keep the camera's times, often ahead (a clock set wrong, a card's
# local time read as UTC), so they went up again at every run; and a file replaced by another of the same size with
# an older time (cp -p, an unzipped correction) was skipped. The time kept is the file's own: another is a change.
# A metadata name is a C# identifier, kept in the case written ("Setting and retrieving properties and metadata for
# Blob service resources", learn.microsoft.com/rest/api/storageservices); lower case, as listings give it back.
MTIME_METADATA = "trapbatch_mtime_ns"
# The largest file sent in one Put Blob, whose Content-MD5 the service computes when the request carries none
# (Put Blob, "Content-MD5": "When omitted in version 2012-02-12 and later, the Blob service generates an MD5 hash");
# a larger one goes up in blocks (azure-storage-blob _upload_helpers.upload_block_blob: one upload when the length is
# at most max_single_put_size, 64 MiB by default, else Put Block + Put Block List), and Put Block List keeps only the
# x-ms-blob-content-md5 the client sends, none when it sends none. So every upload sends its MD5 (content_settings'
# content_md5): read whole up to this size, as the SDK reads it anyway, and hashed in a first pass above it.
SINGLE_PUT_MAX_BYTES = 64 * 1024 * 1024
HASH_CHUNK_BYTES = 1024 * 1024


def files_under(folder: Path) -> list[tuple[Path, str]]:
    """Every file below ``folder`` with its blob name (its relative path with ``/``), hidden folders' files included:
    trapbatch itself says which files it passes over, and why."""
    found: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found.append((path, path.relative_to(folder).as_posix()))
    return found


def file_md5(path: Path) -> bytes:
    """The MD5 of ``path``'s bytes, read in chunks (a video may not fit in memory)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as data:
        while chunk := data.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.digest()


def rewrite_starts_something(container: str, name: str) -> bool:
    """Whether writing this blob again, even with the same bytes, is asked for: the start-on-arrival marker and the
    requests in ``incoming`` act on each write (a refused one written again is tried again; a request written again
    with ``"rerun": true`` is another run: README), so one whose time moved goes up again as before."""
    return name == READY_MARKER or container == INCOMING_CONTAINER


def upload_folder(connection: str, container: str, folder: Path, prefix: str = "",
                  report: Callable[[str], None] | None = None, sent: set[str] | None = None) -> tuple[int, int]:
    """Upload ``folder``'s files under ``prefix``; returns (uploaded, skipped as already there with the same size).
    ``sent``, when given, receives the blob names uploaded (whether the marker went up: ``main``'s last line)."""
    client: ContainerClient = BlobServiceClient.from_connection_string(
        connection, max_single_put_size=SINGLE_PUT_MAX_BYTES).get_container_client(container)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    present: dict[str, BlobProperties] = {
        b.name: b for b in client.list_blobs(name_starts_with=prefix or None, include=["metadata"])}
    compared = [0, 0]  # files whose time moved compared by MD5, and of them those with the blob's bytes
    count_lock = threading.Lock()

    def time_says_unchanged(found: BlobProperties, mtime_ns: int, mtime: float) -> bool:
        """The file's time is the one it had when it went up (``MTIME_METADATA``), or, for a blob written without it
        (an older run, azcopy), not after the blob's. Why the time too, not the size alone: an image list or request
        corrected in place (a name fixed, a digit changed) keeps its size, and was skipped, so the task ran the old
        one."""
        kept = (found.metadata or {}).get(MTIME_METADATA)
        if kept is not None:
            return kept == str(mtime_ns)
        return mtime <= found.last_modified.timestamp() + LAST_MODIFIED_SLACK_S

    def same_bytes_with_new_time(found: BlobProperties, path: Path, name: str, mtime_ns: int) -> bool:
        """The file's bytes are the blob's (its MD5 is the blob's Content-MD5), and the blob now keeps the file's new
        time (Set Blob Metadata, on the blob as listed: ``if_match`` its ETag), so the next run compares times again
        and reads nothing. Why: after a daylight-saving change a FAT/exFAT card shows every photo an hour off, and a
        folder of thousands went up again over a field station's link. The file is read only here, for a blob of
        its size whose time differs and that has an MD5 (one from blocks without it, e.g. azcopy's default, does
        not: it goes up again, as before)."""
        kept_md5 = found.content_settings.content_md5
        if not kept_md5 or rewrite_starts_something(container, name):
            return False
        with count_lock:
            compared[0] += 1
            if report and compared[0] % 100 == 0:  # reading thousands of photos off a card takes minutes: say so
                report(f"compared {compared[0]} files whose time moved with their blobs' MD5")
        if file_md5(path) != bytes(kept_md5):
            return False
        metadata = dict(found.metadata or {})
        metadata[MTIME_METADATA] = str(mtime_ns)
        try:
            client.get_blob_client(name).set_blob_metadata(metadata, etag=found.etag,
                                                           match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):  # written or removed since the listing: send it
            return False
        with count_lock:
            compared[1] += 1
        return True

    def uploaded(item: tuple[Path, str]) -> bool:
        """Already there as it is on disk: the same size, and the same time or, the time moved, the same bytes."""
        path, name = item
        found = present.get(name)
        stat = path.stat()  # before any read: a file changed while it is hashed differs next time
        if found is None or found.size != stat.st_size:
            return False
        return (time_says_unchanged(found, stat.st_mtime_ns, stat.st_mtime)
                or same_bytes_with_new_time(found, path, name, stat.st_mtime_ns))

    candidates = [(path, prefix + name) for path, name in files_under(folder)]
    with ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:  # hashes and metadata updates, many after a time shift
        todo = [item for item, there in zip(candidates, pool.map(uploaded, candidates)) if not there]
    if report and compared[1]:
        report(f"{compared[1]} files had a new time but the blob's bytes (MD5): not sent again, the new time kept")

    def put(item: tuple[Path, str]) -> None:
        path, name = item
        stat = path.stat()  # before the read: a file changed while it goes up differs next time
        metadata = {MTIME_METADATA: str(stat.st_mtime_ns)}
        if stat.st_size <= SINGLE_PUT_MAX_BYTES:
            data = path.read_bytes()
            md5 = hashlib.md5(data, usedforsecurity=False).digest()
            client.upload_blob(name, data, overwrite=True, metadata=metadata,
                               content_settings=ContentSettings(content_md5=bytearray(md5)))
        else:
            md5 = file_md5(path)
            with path.open("rb") as stream:
                client.upload_blob(name, stream, overwrite=True, metadata=metadata,
                                   content_settings=ContentSettings(content_md5=bytearray(md5)))
        if sent is not None:
            sent.add(name)

    # The start-on-arrival marker at the top of the container starts a task over what is there when it lands
    # (README "Start a task when an upload is complete": write it last): sent in parallel with the photos, it
    # could land first and start a task over some of them. It goes up alone, after every photo.
    photos = [item for item in todo if item[1] != READY_MARKER]
    done = 0
    with ThreadPoolExecutor(PARALLEL_UPLOADS) as pool:
        for _ in pool.map(put, photos):
            done += 1
            if report and (done % 100 == 0 or done == len(todo)):
                report(f"uploaded {done}/{len(todo)}")
    for item in todo:
        if item[1] == READY_MARKER:
            put(item)
            if report:
                report(f"uploaded {len(todo)}/{len(todo)} ({READY_MARKER} last)")
    return len(todo), len(candidates) - len(todo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("container", help="the container to upload into (created when missing), e.g. my-camera-traps")
    parser.add_argument("folder", type=Path, help="the folder of photos; sub-folders are kept in the blob names")
    parser.add_argument("--prefix", default="", help="a folder inside the container to put them under, e.g. 2024/a/")
    parser.add_argument("--connection", default=os.environ.get("AzureWebJobsStorage") or LOCAL_STORAGE,
                        help="the storage connection string (default: $AzureWebJobsStorage, else local Azurite)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder\nnext: give the folder your photos are in", file=sys.stderr)
        return 2
    prefix = args.prefix if not args.prefix or args.prefix.endswith("/") else args.prefix + "/"
    sent: set[str] = set()
    marker = (args.folder / READY_MARKER).is_file() and not prefix
    try:
        started = started_marker(args.connection, args.container) if marker else None
        uploaded, skipped = upload_folder(args.connection, args.container, args.folder, prefix,
                                          lambda line: print(line, flush=True), sent)
    except AzureError as exc:
        print(f"error: cannot upload to container {args.container!r}: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0]}\nnext: start Azurite first (python -m devhost --with-azurite), or give "
              "--connection for another account; container names are 3-63 lower-case letters, digits and hyphens",
              file=sys.stderr)
        return 1
    print(f"{uploaded} files uploaded, {skipped} already there, into container {args.container!r}"
          + (f" under {prefix!r}" if prefix else ""))
    # There already, unchanged, it did not go up again; or it went up again (its time changed) with the content of
    # the marker that started a task, which is the same request, hence the same task (README): either way the files
    # uploaded now beside it are in no task
    photos_sent = uploaded - (READY_MARKER in sent)
    same = started is not None and started == (args.folder / READY_MARKER).read_bytes()
    stale = marker and photos_sent > 0 and (READY_MARKER not in sent or same)
    print(next_step(args.container, prefix, marker and not stale, stale))
    return 0


def started_marker(connection: str, container: str) -> bytes | None:
    """The bytes of the marker at the top of ``container`` when it started a task (its receipt,
    ``ready_receipt_blob``, beside it and no refusal, ``ready_error_blob``), else None. Why: a marker written again
    with the same content is the same request, hence the same task, and starts nothing new (README "Start a task when
    an upload is complete"); one whose time alone changed goes up again, and was said to start a task for the photos
    sent with it. A refused one (its ``.error.json``) written again is tried again, so it may start its task."""
    client = BlobServiceClient.from_connection_string(connection).get_container_client(container)
    try:
        if not client.get_blob_client(ready_receipt_blob()).exists() or client.get_blob_client(
                ready_error_blob()).exists():
            return None
        return client.download_blob(READY_MARKER).readall()
    except ResourceNotFoundError:  # no container, or no marker
        return None


def next_step(container: str, prefix: str, marker: bool = False, stale_marker: bool = False) -> str:
    """What to do after the upload. Why not always ``trapbatch submit``: ``incoming`` holds task requests, which
    start their tasks by themselves (README "Start a task by dropping a file"), and the app refuses it as an image
    container, so submitting it was advice that could only fail; a ``marker`` (``READY_MARKER`` at the top of the
    container) starts its task by itself too; a ``stale_marker`` (there already as it is, or its content that of
    the marker that started a task: the same request) starts nothing for the files sent now, and said so it left them
    in no task."""
    if stale_marker:
        return (f"next: {READY_MARKER} was there already as it is (the same request starts no new task), so no task "
                f"starts for the files uploaded now: trapbatch submit --container {container} --only-new --wait runs "
                "them (with the marker's fields as flags)")
    if marker:
        return (f"next: nothing to submit: {READY_MARKER} starts the task by itself; its answer appears beside it "
                f"({ready_receipt_blob()} with the task id, or {READY_MARKER}.error.json saying why not), then "
                "trapbatch watch <task id>")
    if container == INCOMING_CONTAINER:
        return ("next: nothing to submit: each <name>.json request here starts its task by itself; its answer appears "
                "beside it (<name>.task.json with the task id, or <name>.json.error.json saying why not), then "
                "trapbatch watch <task id>")
    return f"next: trapbatch submit --container {container}" + (f" --prefix {prefix}" if prefix else "") + " --wait"


if __name__ == "__main__":
    sys.exit(main())
