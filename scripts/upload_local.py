"""Upload a folder of photos into a container of a local storage emulator (Azurite), for trying trapbatch locally.

Why a script: on Azure, photos go up with azcopy or Storage Explorer (docs/deploy.md); locally neither is installed
here, and devhost reads its images from Azurite. Each file keeps its path relative to the folder as its blob name
(``camera-01/IMG_0001.JPG``), the layout trapbatch reads cameras and folders from. Files already there with the same
size, and not changed on disk since they were uploaded (the file's modification time then is kept in the blob's
metadata), are skipped, so running it again after an interruption uploads only what is missing, and again after
correcting a file (an image list, a request) uploads that file.

    .venv/bin/python -m scripts.upload_local my-camera-traps /path/to/photos [--prefix 2024/site-a/]
"""
from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

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


def files_under(folder: Path) -> list[tuple[Path, str]]:
    """Every file below ``folder`` with its blob name (its relative path with ``/``), hidden folders' files included:
    trapbatch itself says which files it passes over, and why."""
    found: list[tuple[Path, str]] = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found.append((path, path.relative_to(folder).as_posix()))
    return found


def upload_folder(connection: str, container: str, folder: Path, prefix: str = "",
                  report: Callable[[str], None] | None = None, sent: set[str] | None = None) -> tuple[int, int]:
    """Upload ``folder``'s files under ``prefix``; returns (uploaded, skipped as already there with the same size).
    ``sent``, when given, receives the blob names uploaded (whether the marker went up: ``main``'s last line)."""
    client: ContainerClient = BlobServiceClient.from_connection_string(connection).get_container_client(container)
    try:
        client.create_container()
    except ResourceExistsError:
        pass
    present = {b.name: (b.size, b.last_modified.timestamp(), (b.metadata or {}).get(MTIME_METADATA))
               for b in client.list_blobs(name_starts_with=prefix or None, include=["metadata"])}

    def uploaded(path: Path, name: str) -> bool:
        """Already there as it is on disk: the same size, and the file's time the one it had when it went up
        (``MTIME_METADATA``), or, for a blob written without it (an older run, azcopy), not modified since the blob
        was. Why the time too: an image list or request corrected in place (a name fixed, a digit changed) keeps its
        size, and was skipped, so the task ran the old one."""
        found = present.get(name)
        stat = path.stat()
        if found is None or found[0] != stat.st_size:
            return False
        if found[2] is not None:
            return found[2] == str(stat.st_mtime_ns)
        return stat.st_mtime <= found[1] + LAST_MODIFIED_SLACK_S

    todo = [(path, prefix + name) for path, name in files_under(folder) if not uploaded(path, prefix + name)]

    def put(item: tuple[Path, str]) -> None:
        path, name = item
        mtime_ns = path.stat().st_mtime_ns  # before the read: a file changed while it goes up differs next time
        with path.open("rb") as data:
            client.upload_blob(name, data, overwrite=True, metadata={MTIME_METADATA: str(mtime_ns)})
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
    return len(todo), len(files_under(folder)) - len(todo)


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
