"""Result entries in MegaDetector batch format, flushed incrementally, and resumed after a restart.

Why this module exists: a shard attempt may die at any moment (pre-empted node, OOM, crash). Results are written
to the output (file or blob) every few seconds by a background thread, off the inference hot path, as a complete,
valid MegaDetector document each time; a restarted attempt reads it back and skips the images already done.

Entry shapes (MegaDetector batch output format 1.6, https://lila.science/megadetector-output-format):
    {"file": name, "detections": [{"category": "1", "conf": 0.912, "bbox": [x, y, w, h]}, ...],
     "width": 4000, "height": 3000, "datetime": "2024:05:02 09:59:58"}
    {"file": name, "failure": "image access failure" | "inference failure", "detections": null,
     "failure_kind": "retryable" | "permanent", "failure_reason": "auth" | "undecodable" | ...}
``width``/``height`` (every success, none on a failure) are the image's pixel size as it was decoded, after its
EXIF orientation: the keys and values MegaDetector's own ``run_detector_batch`` writes with ``--include_image_size``
(``process_image``: ``result['width'] = image.width``, ``image`` being the PIL image ``load_image`` returned, already
EXIF-transposed; megadetector/detection/run_detector_batch.py, agentmorris/MegaDetector). They let the exports
turn normalized boxes into pixels (COCO) without reading any image again (trapbatch issue 11).
``datetime`` (a success whose EXIF has a readable ``DateTimeOriginal``; absent otherwise) is the capture time as
MegaDetector writes it with ``--include_image_timestamp``: the exports' capture times (Camtrap DP, COCO) come from it.
``exif_metadata`` (beside a ``datetime``, when the photo has EXIF 2.31 ``OffsetTimeOriginal``,
``OffsetTimeDigitized`` or ``OffsetTime``): ``{"OffsetTimeOriginal": "+02:00"}`` as ``--include_exif_tags
OffsetTimeOriginal,OffsetTimeDigitized,OffsetTime`` writes it
(``detections_entry``), the zone of the photo's own clock, which the Camtrap DP export uses.
Per-image failures are data, never exceptions; ``failure_kind``/``failure_reason`` are trapbatch's additions (see
``gpu_batch.manifest``): a restarted attempt keeps successes and permanent failures and runs retryable ones again.

Beside the results, a small counter (``progress_document``, in ``layout.attempt_progress_blob`` for blob outputs) is
rewritten after each flush, so that the orchestration's poll learns how far a running shard is from a few bytes,
instead of reading megabytes of results every poll. It is best effort: a counter that cannot be written never stops
the shard. After the last flush (``ResultWriter.close``), a blob output also gets its coverage summary
(``gpu_batch.manifest.coverage_summary``, in ``layout.attempt_coverage_blob``): counts and the names left not final,
tied to the ETag Put Blob returned for the results, so the poll counts coverage without parsing them. Best effort
too: without it (or with a stale one) the app parses the results, as before.

Photos cut short (a JPEG without its end-of-image marker, decoded as far as it goes: ``formats.jpeg_end.jpeg_cut_short``)
keep MegaDetector's entry; the writer names the successful ones in the document's ``info.trapbatch.damaged`` (sorted),
written with their entries in each flush, so a restarted attempt keeps them with the entries it resumes
(``load_resumable_state``). A blob output also gets, after each flush while there are any,
``layout.attempt_damaged_blob``: ``damaged_document``, the same names tied to the results' ETag, which the merge
reads instead of the results (``activities.shard_results.shard_damaged``); best effort as the counter. The merge
view names them too, with the earlier attempts' that it merges (``write_view``): a merge that takes the view needs no
list, so a list that was never written (this attempt's writes all failed, an earlier attempt died before its own)
loses no name.

Must not: run models or decode images.
"""
from __future__ import annotations

import contextlib
import gc
import glob
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Protocol, Sequence

from gpu_batch import manifest as contract
from gpu_batch.formats import jsonio, mergeview
from gpu_batch.formats.entries import (DETECTION_CATEGORIES, FAILURE_IMAGE_ACCESS, FAILURE_INFERENCE, FORMAT_VERSION,
                                      damaged_document, damaged_in)

if TYPE_CHECKING:  # a type only: this module decodes no image
    from gpu_batch.worker.preprocess import CaptureTime

logger = logging.getLogger(__name__)

FAILURE_IMAGE_OPEN = FAILURE_IMAGE_ACCESS  # megadetector.detection.run_detector.FAILURE_IMAGE_OPEN
FAILURE_INFER = FAILURE_INFERENCE  # megadetector.detection.run_detector.FAILURE_INFER


class OutputNotWritable(Exception):
    """The results output cannot be written (whole-shard problem, exit code 4)."""


class OutputTaken(Exception):
    """Another run of this same shard attempt replaced the results since this run last read or wrote them.

    Why it exists: Azure Batch reruns a task whose node was lost (even with ``max_task_retry_count=0``) while the
    first process may live on, cut off, and flush again later. Each flush rewrites the whole document from the
    writer's memory, so the stale run would replace the finished results with its smaller set. The sinks make every
    write conditional on what they last read or wrote (``BlobSink``, ``FileSink``) and raise this when the condition
    fails. Why not an ``OutputNotWritable``: it is not an outage, and trying again can only do harm; the run must stop
    without writing anything more for the attempt (exit ``exit_codes.OUTPUT_TAKEN``)."""


class ResultSink(Protocol):
    """Where a shard's results document lives."""

    def read(self) -> bytes | None: ...

    def write(self, data: bytes) -> str | None:
        """Replace the document; returns what identifies the bytes now stored (a blob's ETag), None for a file.
        Raises ``OutputNotWritable`` (worth another try) or, for a sink that was ``read``, ``OutputTaken`` when the
        document is no longer what this sink read or last wrote."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class CoverageTarget:
    """Where a finished attempt's coverage summary goes (``sink``), and what it summarizes against: the attempt's
    manifest ``images`` and the ETag of the manifest blob as the worker read it (``gpu_batch.manifest``)."""

    sink: ResultSink
    images: Sequence[str]
    manifest_etag: str
    names_limit: int = contract.COVERAGE_NAMES_LIMIT


@dataclass(frozen=True, slots=True)
class ViewTarget:
    """Where a finished attempt's merge view goes (``sink``) and what it is made for: the task and its CSV and
    preview threshold (``ShardManifest.merge_view_threshold``), the manifest's ``images`` and its ETag as the worker
    read it (``gpu_batch.formats.mergeview``)."""

    sink: ResultSink
    task_id: str
    threshold: float
    images: Sequence[str]
    manifest_etag: str
    # a resubmitted attempt's: the shard's first manifest and earlier results (``ShardManifest.merge_view_basis``),
    # read through ``read`` when the attempt has finished, so that the view covers the whole shard
    basis: contract.ViewBasis | None = None
    read: mergeview.BlobReader | None = None
    # an image-list task's: the shard's list document, whose rows the view's export lines are made with
    # (``ShardManifest.merge_view_list``)
    listed: contract.ViewList | None = None


FileIdentity = tuple[int, int, int, int]  # st_dev, st_ino, st_mtime_ns, st_size


def _file_identity(st: os.stat_result) -> FileIdentity:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # read once, at import: os.umask can only be read by setting it
STALE_TEMPORARY_S = 600.0


class FileSink:
    """A local results file, replaced atomically on every flush.

    Once ``read`` (``load_resumable``) has been called, a write replaces the file only if it is still the one this
    sink read (or found absent) or last wrote, compared by device, inode, modification time and size just before
    ``os.replace``; otherwise ``OutputTaken``. Why: two runs of one shard in local mode have the same late-writer
    problem as on Batch (``OutputTaken``). The check and the rename are not one atomic step: two writers within
    microseconds of each other are not told apart, a late writer that wakes up seconds later is.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._guarded = False  # set by ``read``: from then on, writes are conditional
        self._expected: FileIdentity | None = None  # what the file must still be (None: absent)
        self._taken: OutputTaken | None = None

    def read(self) -> bytes | None:
        self._remove_stale_temporaries()
        try:
            with self.path.open("rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except (FileNotFoundError, NotADirectoryError):  # no previous output (a bad folder fails at write)
            self._guarded, self._expected = True, None
            return None
        self._guarded, self._expected = True, _file_identity(st)
        return data

    def _remove_stale_temporaries(self) -> None:
        """Delete ``<name>.*.tmp`` beside the results that a run killed between writing and renaming left (nothing
        else removes them). Only those older than ``STALE_TEMPORARY_S``: a live writer's lives for milliseconds."""
        cutoff = time.time() - STALE_TEMPORARY_S
        with contextlib.suppress(OSError):
            for leftover in self.path.parent.glob(glob.escape(self.path.name) + ".*.tmp"):
                with contextlib.suppress(OSError):
                    if leftover.stat().st_mtime < cutoff:
                        leftover.unlink()

    def _current(self) -> FileIdentity | None:
        try:
            return _file_identity(os.stat(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, data: bytes) -> None:  # a file has no identity the app could check: no coverage summary
        if self._taken is not None:
            raise self._taken
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name + ".", suffix=".tmp")
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would be kept by the rename: the mode open() would give
                os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            mine = _file_identity(os.stat(tmp))  # a rename keeps inode, mtime and size
            if self._guarded and self._current() != self._expected:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self._taken = OutputTaken(
                    f"results {self.path} were replaced by another run of this shard attempt since this run read or "
                    "wrote them; this run stops without writing more (the other run's results are kept)")
                raise self._taken
            os.replace(tmp, self.path)
        except OSError as exc:
            raise OutputNotWritable(f"cannot write results to {self.path}: {exc}") from exc
        self._expected = mine

    def describe(self) -> str:
        return str(self.path)


def failure_entry(name: str, failure: str, reason: str) -> dict[str, Any]:
    """A failed entry: MegaDetector's ``failure`` string and trapbatch's kind and reason (``gpu_batch.manifest``)."""
    return {"file": name, "failure": failure, "detections": None, **contract.failure_fields(reason)}


def detections_entry(name: str, detections: list[dict[str, Any]], width: int, height: int,
                     captured: CaptureTime | None = None) -> dict[str, Any]:
    """A successful entry: its detections, the decoded image's ``width`` x ``height`` in pixels (after EXIF
    orientation) and its capture time when the image has one, in the order MegaDetector's ``process_image`` writes
    them with ``include_image_size`` and ``include_image_timestamp`` (which writes ``null`` for an image without
    one: here the key is left out, ten million nulls being no information), then the photo's EXIF offsets from UTC
    when it has any (``preprocess.CaptureTime``), as ``exif_metadata``, which ``process_image`` writes last with
    ``include_exif_tags="OffsetTimeOriginal,OffsetTimeDigitized,OffsetTime"`` (left out without any, as
    ``datetime`` is).

    Why that key and not the offset inside ``datetime``: MegaDetector's ``get_image_datetime`` writes only
    ``YYYY:MM:DD HH:MM:SS`` there, and readers parse it in that form (``formats.entries.is_exif_time``, Timelapse);
    the format (format 1.6, megadetector-output-format.md and ``postprocessing/validate_batch_results.py``) checks an
    image's ``file``, ``detections`` and ``failure`` and lets other per-image fields be, and ``exif_metadata`` is the
    one MegaDetector itself writes for EXIF tags: a results file stays one MegaDetector could have written, and a
    reader that knows nothing of offsets reads the same ``datetime`` as before."""
    entry: dict[str, Any] = {"file": name, "detections": detections, "width": int(width), "height": int(height)}
    if captured is not None:
        entry["datetime"] = captured.datetime
        if captured.offsets:
            entry["exif_metadata"] = dict(captured.offsets)
    return entry


def results_document(entries: Iterable[Mapping[str, Any]], info: Mapping[str, Any]) -> dict[str, Any]:
    """A complete MegaDetector document; images sorted by file name as MegaDetector's writer does."""
    images = sorted(entries, key=lambda e: e["file"])
    return {"images": images, "detection_categories": dict(DETECTION_CATEGORIES),
            "info": {"format_version": FORMAT_VERSION, **info}}


def progress_document(images_done: int) -> bytes:
    """The counter a running attempt writes after each flush: the entries in its results so far (successes and
    failures of any kind, those kept from a restart of the same attempt included)."""
    return json.dumps({"images_done": images_done}, separators=(",", ":")).encode("utf-8")




def load_resumable(sink: ResultSink, wanted: Iterable[str]) -> dict[str, dict[str, Any]]:
    """``load_resumable_state``'s entries alone."""
    return load_resumable_state(sink, wanted)[0]


def load_resumable_state(sink: ResultSink, wanted: Iterable[str]) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """Entries from a previous run of this attempt that can be kept, for images still wanted: successes and
    permanent failures (a corrupt image stays corrupt); and which of the kept successes it named damaged (cut short:
    ``info.trapbatch.damaged``), which are not decoded again.

    Retryable failures are dropped so that the image is tried again, and so are failures without a kind (written
    before kinds existed: they may have been transient read errors). An unreadable or invalid previous output is
    ignored with a warning: starting over is always safe.
    """
    data = sink.read()
    if not data:
        return {}, set()
    try:
        doc = json.loads(data)
        images = doc["images"]
        if not isinstance(images, list):
            raise TypeError("'images' is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        logger.warning("previous output %s is not a valid results document (%s); starting this shard over",
                       sink.describe(), exc)
        return {}, set()
    wanted_set = set(wanted)
    kept = {}
    for entry in images:
        if not isinstance(entry, dict) or entry.get("file") not in wanted_set:
            continue
        if contract.is_failure(entry):
            if entry.get(contract.FAILURE_KIND) == contract.PERMANENT:
                kept[entry["file"]] = entry
        elif "failure" not in entry and isinstance(entry.get("detections"), list):
            kept[entry["file"]] = entry
    damaged = {n for n in damaged_in(doc) if n in kept and not contract.is_failure(kept[n])}
    return kept, damaged


class ResultWriter:
    """Collects entries and flushes the whole document to the sink every ``flush_seconds`` from its own thread.

    ``on_flushed(n_new)`` is called after each successful flush with the number of entries added by this attempt
    (the fault-injection hook uses it);
    ``flush_when(n_new)`` may ask for an immediate flush once that many new entries were added;
    ``progress``, when given, receives ``progress_document`` after each flush (best effort);
    ``coverage``, when given, receives the coverage summary of the final document after ``close`` (best effort; only
    when the sink returned an identity for it, i.e. a blob's ETag);
    ``damaged``: the kept entries' names that were cut short (``load_resumable_state``); ``damaged_sink``, when
    given, receives ``damaged_document`` after each flush while there are any (best effort, as ``progress``).
    """

    ENCODE_SECONDS = 0.5  # how often the flushing thread encodes newly added entries between flushes
    OUTAGE_S = 300.0  # how long background flushes may fail in a row before the output is taken as lost
    CLOSE_RETRY_S = 10.0  # between the final flush's tries during an outage
    retry_sleep = staticmethod(time.sleep)  # between a flush's own tries (tests replace it)

    def __init__(self, sink: ResultSink, info: Mapping[str, Any], initial: Mapping[str, dict[str, Any]] | None = None,
                 flush_seconds: float = 5.0, on_flushed: Callable[[int], None] | None = None,
                 flush_at_new: int | None = None, progress: ResultSink | None = None,
                 coverage: CoverageTarget | None = None, view: ViewTarget | None = None,
                 damaged: Iterable[str] = (), damaged_sink: ResultSink | None = None) -> None:
        self.sink = sink
        self.progress = progress
        self.damaged_sink = damaged_sink
        self._damaged: set[str] = set(damaged)  # successes cut short (``add``), named in every flush's ``info``
        self.coverage = coverage
        self.view = view
        # the last flush: the identity its write returned, its entries and its bytes (the merge view reads those)
        self._written: tuple[str | None, list[dict[str, Any]], bytes] | None = None
        self.info = dict(info)
        self._entries: dict[str, dict[str, Any]] = dict(initial or {})
        self._lock = threading.Lock()
        self._flush_turn = threading.Lock()  # ``flush``
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.flush_seconds = flush_seconds
        self.on_flushed = on_flushed
        self.flush_at_new = flush_at_new
        self._new = 0
        # Each entry is JSON-encoded once (by the flushing thread, soon after it is added) and the document is
        # assembled from those pieces, instead of re-encoding every entry at every flush: for a large shard that
        # was seconds of GIL time per flush, competing with the inference threads, and the last one ran on the
        # critical path at close. Entries must not be mutated after ``add``.
        self._encoded: dict[str, tuple[dict[str, Any], str]] = {}
        self._fresh: list[dict[str, Any]] = []
        self._encode_lock = threading.Lock()
        # what stopped the flushing thread: an outage past OUTAGE_S, or another run that took the output
        self.error: OutputNotWritable | OutputTaken | None = None
        self._failing_since: float | None = None  # when the background flushes began to fail (an outage)
        self._thread = threading.Thread(target=self._run, name="result-writer", daemon=True)

    def start(self) -> None:
        """Write the initial document synchronously (proves the output is writable), then start flushing."""
        self.flush()
        self._thread.start()

    def add(self, entry: dict[str, Any], damaged: bool = False) -> None:
        """Add (or replace) ``entry``; ``damaged``: its photo was cut short and decoded as far as it goes (a success
        whose entry stays MegaDetector's; the document's ``info`` names it)."""
        with self._lock:
            self._entries[entry["file"]] = entry
            if damaged:
                self._damaged.add(entry["file"])
            else:
                self._damaged.discard(entry["file"])
            self._fresh.append(entry)
            self._new += 1
            due = self.flush_at_new is not None and self._new >= self.flush_at_new
        self._dirty.set()
        if due:
            # Only fault injection sets flush_at_new (crash_after:K): flush here, on the adding thread, so exactly the
            # first K results are written when the fault fires, however fast the pipeline outruns the writer thread
            # (waking the writer let a loaded machine flush the whole shard first, and nothing was left to resubmit).
            self.flush_at_new = None
            self.flush()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._entries.values())

    def flush(self, extra_info: Mapping[str, Any] | None = None) -> None:
        # One flush at a time: fault injection's ``flush_at_new`` flushes on the adding thread while the flushing
        # thread may be writing, and two conditional writes of one blob on the same ETag made the loser take the
        # winner's bytes for another run's (``OutputTaken``). The later flush writes after, on the new ETag.
        with self._flush_turn:
            self._flush(extra_info)

    def _flush(self, extra_info: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            entries = list(self._entries.values())
            new = self._new
            damaged = sorted(self._damaged)
            self._dirty.clear()
        info = {**self.info, **(extra_info or {})}
        if damaged:  # beside trapbatch's other fields of the shard's ``info``; entries stay MegaDetector's
            info["trapbatch"] = {**(info.get("trapbatch") or {}), "damaged": damaged}
        data = self._document_bytes(entries, info)
        last: OutputNotWritable | None = None
        # transient storage errors: a short retry before declaring the output lost (``OutputTaken`` passes through:
        # another run wrote the results, and a retry would overwrite them)
        for attempt in range(3):
            try:
                identity = self.sink.write(data)
                break
            except OutputNotWritable as exc:
                last = exc
                self.retry_sleep(0.5 * (attempt + 1))
        else:
            assert last is not None
            self._dirty.set()  # not written: the next flush writes these entries too
            raise last
        self._written = (identity, entries, data)
        if self.damaged_sink is not None and damaged and identity:
            try:
                self.damaged_sink.write(damaged_document(identity, damaged))
            except OutputNotWritable as exc:  # the names are in the results' info and the view: the merge reads them
                logger.warning("damaged list %s not written: %s", self.damaged_sink.describe(), exc)
        if self.progress is not None:
            try:
                self.progress.write(progress_document(len(entries)))
            except OutputNotWritable as exc:  # the results are safe; only the poll's progress view lags
                logger.warning("progress counter %s not written: %s", self.progress.describe(), exc)
        if self.on_flushed is not None:
            self.on_flushed(new)

    def _encoded_entry(self, entry: dict[str, Any]) -> str:
        cached = self._encoded.get(entry["file"])
        if cached is not None and cached[0] is entry:
            return cached[1]
        text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        self._encoded[entry["file"]] = (entry, text)
        return text

    def _encode_fresh(self) -> None:
        with self._lock:
            fresh, self._fresh = self._fresh, []
        with self._encode_lock:
            for entry in fresh:
                self._encoded_entry(entry)

    def _document_bytes(self, entries: list[dict[str, Any]], info: Mapping[str, Any]) -> bytes:
        """Exactly ``json.dumps(results_document(entries, info), separators=(",", ":"), ensure_ascii=False)``."""
        shell = json.dumps(results_document([], info), separators=(",", ":"), ensure_ascii=False)
        head = '{"images":[]'
        assert shell.startswith(head)
        with self._encode_lock:
            parts = [self._encoded_entry(e) for e in sorted(entries, key=lambda e: e["file"])]
        return "".join(('{"images":[', ",".join(parts), "]", shell[len(head):])).encode("utf-8")

    def _run(self) -> None:
        last_flush = time.monotonic()
        while not self._stop.is_set():
            woken = self._wake.wait(min(self.flush_seconds, self.ENCODE_SECONDS))
            self._wake.clear()
            if self._stop.is_set():
                break
            self._encode_fresh()
            if not woken and time.monotonic() - last_flush < self.flush_seconds:
                continue
            last_flush = time.monotonic()
            if self._dirty.is_set():
                try:
                    self.flush()
                    self._failing_since = None
                except OutputTaken as exc:  # never an outage: stop at once, the pipeline raises it at its next result
                    self.error = exc
                    return
                except OutputNotWritable as exc:
                    # A storage outage of a few minutes (throttling, a failover) should not cost the shard its
                    # attempt while the GPU goes on: the entries stay in memory and the next flush writes them all.
                    # Past OUTAGE_S the output is taken as lost (exit 4; the next attempt resumes from the last
                    # flush that landed).
                    now = time.monotonic()
                    if self._failing_since is None:
                        self._failing_since = now
                    if now - self._failing_since >= self.OUTAGE_S:
                        self.error = exc
                        return
                    logger.warning("results %s not written (%s); trying again at the next flush", self.sink.describe(),
                                   exc)

    def close(self, extra_info: Mapping[str, Any] | None = None, view_later: bool = False) -> None:
        """Stop the flushing thread and write the final document, its coverage summary and (unless ``view_later``:
        the caller runs ``write_view`` when the GPU has other work, as the resident worker does) its merge view.

        ``OutputTaken`` (from the thread or the final flush) is raised before the summary and the view: they describe
        the other run's results once it finishes, and this run must write nothing more for the attempt."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()
        if self.error is not None:
            raise self.error
        self._final_flush(extra_info)
        self._write_coverage()
        if not view_later:
            self.write_view()

    def _final_flush(self, extra_info: Mapping[str, Any] | None) -> None:
        """The last flush, tried again until the outage that may already be under way has lasted ``OUTAGE_S``: an
        outage over the shard's end otherwise cost its attempt and every entry since the last flush that landed.
        ``OutputTaken`` is no outage and passes through at once."""
        started = self._failing_since if self._failing_since is not None else time.monotonic()
        while True:
            try:
                self.flush(extra_info)
                self._failing_since = None
                return
            except OutputNotWritable as exc:
                if time.monotonic() - started >= self.OUTAGE_S:
                    raise
                logger.warning("results %s not written at the shard's end (%s); trying again in %.0f s",
                               self.sink.describe(), exc, self.CLOSE_RETRY_S)
                self.retry_sleep(self.CLOSE_RETRY_S)

    def _write_coverage(self) -> None:
        """The coverage summary of what the last flush wrote, tied to the identity its write returned."""
        if self.coverage is None or self._written is None or not self._written[0]:
            return
        identity, entries, _ = self._written
        assert identity is not None
        doc = contract.coverage_summary({e["file"]: e for e in entries}, self.coverage.images, identity,
                                        self.coverage.manifest_etag, self.coverage.names_limit)
        try:
            self.coverage.sink.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        except OutputNotWritable as exc:  # the results are safe; the app parses them instead
            logger.warning("coverage summary %s not written: %s", self.coverage.sink.describe(), exc)

    def write_view(self) -> None:
        """The merge's view of what the last flush wrote (``gpu_batch.formats.mergeview``), made from those bytes as
        the merge parses them and tied to the identity their write returned. Best effort: without it the merge reads
        the entries, as before; none when an image of the manifest has no final entry (the shard runs again). It names
        the photos cut short of every attempt it covers, from the documents it parses anyway (``mergeview.build_view``):
        the merge that takes it reads neither those results nor ``damaged_sink``'s lists, which may be missing (best
        effort, or an earlier attempt that died between the two writes).

        Cost: about 0.1 s of one core per 10,000 images (``bench/RESULTS.md``, eleventh session), with the garbage
        collector paused meanwhile (a few MB of short-lived objects, each young collection otherwise a third more)."""
        if self.view is None or self._written is None or not self._written[0]:
            return
        identity, _, data = self._written
        assert identity is not None
        started = time.monotonic()
        collecting = gc.isenabled()
        gc.disable()
        try:
            doc = jsonio.loads(data)
            images, manifest_etag, earlier = self.view.images, self.view.manifest_etag, []
            if self.view.basis is not None and self.view.read is not None:  # a later attempt: the whole shard
                whole = mergeview.whole_shard(self.view.basis, self.view.read)
                images, manifest_etag, earlier = whole.images, whole.manifest_etag, whole.earlier
            view = mergeview.build_view(self.view.task_id, self.view.threshold, images, doc.get("images") or [],
                                        identity, manifest_etag, earlier, self._listed(), damaged_in(doc))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:  # a bug or an unreadable blob, not a stop
            logger.warning("merge view for %s not made: %s", self.sink.describe(), exc)
            return
        finally:
            if collecting:
                gc.enable()
        if view is None:
            return
        try:
            self.view.sink.write(view)
        except OutputNotWritable as exc:  # the results are safe; the merge reads the entries instead
            logger.warning("merge view %s not written: %s", self.view.sink.describe(), exc)
            return
        logger.info("merge view %s written (%d bytes) in %.2fs", self.view.sink.describe(), len(view),
                    time.monotonic() - started)

    def _listed(self) -> mergeview.ListedRows | None:
        """The image list's rows of the shard for the view's export lines; None (a view whose export lines the
        exports will not take, the merge still does) when there are none to read or they cannot be read."""
        if self.view is None or self.view.listed is None or self.view.read is None:
            return None
        try:
            return mergeview.list_rows(self.view.listed, self.view.read)
        except (ValueError, TypeError) as exc:
            logger.warning("merge view for %s made without the image list's rows: %s", self.sink.describe(), exc)
            return None
