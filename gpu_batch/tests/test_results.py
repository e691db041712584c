"""Incremental flushing and resume bookkeeping of the results writer."""
from __future__ import annotations

import json
import time
from typing import Callable
from pathlib import Path

import pytest

from gpu_batch.worker.results import (FileSink, OutputNotWritable, ResultWriter, detections_entry, failure_entry,
                                      load_resumable)


def test_writer_flushes_periodically_off_the_caller_thread(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "out.json")
    flushed: list[int] = []
    w = ResultWriter(sink, {"detector": "x"}, flush_seconds=0.2, on_flushed=flushed.append)
    w.start()
    assert json.loads(sink.read() or b"")["images"] == []  # initial document proves writability
    w.add(detections_entry("b.jpg", [], 640, 480))
    w.add(failure_entry("a.jpg", "image access failure", "undecodable"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and 2 not in flushed:
        time.sleep(0.05)
    assert 2 in flushed
    doc = json.loads(sink.read() or b"")
    assert [e["file"] for e in doc["images"]] == ["a.jpg", "b.jpg"]  # sorted like MegaDetector's writer
    w.close({"complete": True})
    assert json.loads(sink.read() or b"")["info"]["complete"] is True


def test_load_resumable_keeps_successes_and_permanent_failures_for_wanted_images(tmp_path: Path) -> None:
    sink = FileSink(tmp_path / "out.json")
    legacy = {"file": "e", "failure": "image access failure", "detections": None}  # written before kinds existed
    older = {"file": "f", "detections": []}  # written before entries carried their image's size
    sink.write(json.dumps({"images": [detections_entry("a", [], 640, 480),
                                      failure_entry("b", "inference failure", "inference"),
                                      failure_entry("c", "image access failure", "undecodable"),
                                      failure_entry("d", "image access failure", "auth"), legacy, older,
                                      detections_entry("zzz-not-in-shard", [], 640, 480)]}).encode())
    kept = load_resumable(sink, ["a", "b", "c", "d", "e", "f"])
    assert set(kept) == {"a", "c", "f"}  # retryable (b, d) and kind-less (e) failures are run again
    # A kept success keeps its size as written; one written without a size stays without (the exports then read it).
    assert kept["a"] == {"file": "a", "detections": [], "width": 640, "height": 480}
    assert kept["f"] == older
    assert kept["c"] == {"file": "c", "failure": "image access failure", "detections": None,
                         "failure_kind": "permanent", "failure_reason": "undecodable"}
    sink.write(b'{"images": [ {"file": "trunc')
    assert load_resumable(sink, ["a"]) == {}
    assert load_resumable(FileSink(tmp_path / "absent.json"), ["a"]) == {}


def test_unwritable_sink_raises_output_not_writable(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    w = ResultWriter(FileSink(tmp_path / "f" / "out.json"), {}, flush_seconds=10)
    with pytest.raises(OutputNotWritable, match="cannot write results"):
        w.start()


def test_incrementally_encoded_document_is_byte_identical_to_a_full_dump(tmp_path: Path) -> None:
    from gpu_batch.worker.results import results_document

    sink = FileSink(tmp_path / "out.json")
    initial = {"z.jpg": detections_entry("z.jpg", [{"category": "1", "conf": 0.5, "bbox": [0.1, 0.2, 0.3, 0.4]}],
                                         4000, 3000)}
    w = ResultWriter(sink, {"detector": "x", "note": "é"}, initial=initial, flush_seconds=0.1)
    w.start()
    final = dict(initial)
    for i in range(300):
        entry = (failure_entry(f"f{i % 7}.jpg", "inference failure", "inference") if i % 10 == 0 else
                 detections_entry(f"img_{i % 120:03d}é.jpg",
                                  [{"category": "2", "conf": i / 1000, "bbox": [0.1, 0.2, i / 997, 0.4]}] * (i % 4),
                                  width=1000 + i, height=700 + i))
        w.add(entry)  # names repeat: a replaced entry must be re-encoded
        final[entry["file"]] = entry
        if i % 100 == 0:
            time.sleep(0.6)  # let the flushing thread encode and flush in between
    w.close({"complete": True})
    expected = json.dumps(results_document(list(final.values()), {"detector": "x", "note": "é", "complete": True}),
                          separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert sink.read() == expected


def test_a_progress_counter_follows_each_flush_and_its_failure_never_stops_the_shard(tmp_path: Path) -> None:
    sink, counter = FileSink(tmp_path / "out.json"), FileSink(tmp_path / "out.progress.json")
    w = ResultWriter(sink, {}, initial={"k.jpg": detections_entry("k.jpg", [], 640, 480)}, flush_seconds=60,
                     progress=counter)
    w.start()
    assert json.loads(counter.read() or b"") == {"images_done": 1}  # a kept entry of a restarted attempt counts
    w.add(detections_entry("a.jpg", [], 640, 480))
    w.add(failure_entry("b.jpg", "image access failure", "auth"))  # a retryable failure is done for progress
    w.flush()
    assert json.loads(counter.read() or b"") == {"images_done": 3}
    assert len(counter.read() or b"") < 64  # a few bytes, whatever the shard's size
    (tmp_path / "blocked").write_text("x")
    broken = ResultWriter(FileSink(tmp_path / "out2.json"), {}, flush_seconds=60,
                          progress=FileSink(tmp_path / "blocked" / "p.json"))
    broken.start()
    broken.add(detections_entry("a.jpg", [], 640, 480))
    broken.close({"complete": True})  # no exception: the results were written
    assert json.loads((tmp_path / "out2.json").read_text())["info"]["complete"] is True


def test_a_blob_shard_writes_its_counter_where_the_poll_reads_it() -> None:
    """The worker's wiring (``__main__._progress_sink``): beside the attempt's results, at the name the poll activity
    reads (``layout.attempt_progress_blob``); a file-mode run (bench, tests) writes none."""
    from types import SimpleNamespace

    from gpu_batch import layout
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker.__main__ import _progress_sink

    opened: list[tuple[str, str]] = []
    service = SimpleNamespace(get_blob_client=lambda container, name: opened.append((container, name)))
    manifest = ShardManifest(task_id="task-0123456789abcdef0123", shard_id="s00007", attempt=2, source_container="cams",
                             images=("a.jpg",), output_container="state",
                             output_blob=layout.attempt_results_blob("task-0123456789abcdef0123", "s00007", 2),
                             model="m.pt")
    sink = _progress_sink(True, service, manifest)
    assert sink is not None and opened == [("state", layout.attempt_progress_blob("task-0123456789abcdef0123",
                                                                                  "s00007", 2))]
    assert _progress_sink(False, None, manifest) is None


class _EtagSink:
    """A blob-like sink: keeps the bytes and returns a new ETag per write, as ``BlobSink`` returns Put Blob's."""

    def __init__(self) -> None:
        self.data: bytes | None = None
        self.writes = 0

    def read(self) -> bytes | None:
        return self.data

    def write(self, data: bytes) -> str | None:
        self.data, self.writes = data, self.writes + 1
        return f"0x{self.writes:04X}"

    def describe(self) -> str:
        return "etag sink"


def test_close_writes_the_coverage_summary_of_the_final_document_with_its_etag(tmp_path: Path) -> None:
    from gpu_batch.manifest import read_coverage_summary
    from gpu_batch.worker.results import CoverageTarget

    results, summary = _EtagSink(), _EtagSink()
    images = ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg", "a.jpg"]
    w = ResultWriter(results, {}, initial={"a.jpg": detections_entry("a.jpg", [], 640, 480)}, flush_seconds=60,
                     coverage=CoverageTarget(summary, images, '"0xMANIFEST"'))
    w.start()
    w.add(failure_entry("b.jpg", "image access failure", "undecodable"))
    w.add(failure_entry("c.jpg", "image access failure", "auth"))
    w.flush()
    assert summary.data is None  # only after the last flush
    w.add(detections_entry("x.jpg", [], 640, 480))  # not in the manifest: counted as foreign
    w.close({"complete": True})
    parsed = read_coverage_summary(summary.data)
    assert parsed is not None and parsed.matches(f"0x{results.writes:04X}") and not parsed.matches("0x0001")
    assert (parsed.images, parsed.final, parsed.permanent, parsed.foreign) == (5, 2, 1, 1)
    assert parsed.retryable == ("c.jpg",) and parsed.unwritten == ("d.jpg", "e.jpg")
    assert parsed.manifest_etag == "0xMANIFEST"

    file_summary = _EtagSink()  # a file output has no identity the app could check: no summary
    f = ResultWriter(FileSink(tmp_path / "out.json"), {}, flush_seconds=60,
                     coverage=CoverageTarget(file_summary, images, "0xM"))
    f.start()
    f.close()
    assert file_summary.data is None


def test_a_blob_shard_writes_its_coverage_summary_where_the_poll_reads_it() -> None:
    from types import SimpleNamespace

    from gpu_batch import layout
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker.__main__ import _coverage_target

    opened: list[tuple[str, str]] = []
    service = SimpleNamespace(get_blob_client=lambda container, name: opened.append((container, name)))
    manifest = ShardManifest(task_id="task-0123456789abcdef0123", shard_id="s00007", attempt=2, source_container="cams",
                             images=("a.jpg",), output_container="state",
                             output_blob=layout.attempt_results_blob("task-0123456789abcdef0123", "s00007", 2),
                             model="m.pt")
    target = _coverage_target(True, service, manifest, ["a.jpg"], "0xM")
    assert target is not None and target.images == ["a.jpg"] and target.manifest_etag == "0xM"
    assert opened == [("state", layout.attempt_coverage_blob("task-0123456789abcdef0123", "s00007", 2))]
    assert _coverage_target(False, None, manifest, ["a.jpg"], "") is None
    assert _coverage_target(True, service, manifest, ["a.jpg"], "") is None  # no ETag: nothing to tie it to


@pytest.mark.parametrize("readable", [True, False])
def test_the_view_carries_the_image_lists_rows_its_manifest_names_or_is_made_without_them(readable: bool) -> None:
    """The view of a finished attempt is made with the rows of the shard's list document (``ViewTarget.listed``,
    read through the worker's reader), whose ETag it names; a document that cannot be read gives a view without
    rows (the merge still uses it; the exports then format the entries), not a failed shard."""
    from gpu_batch.formats.mergeview import read_view
    from gpu_batch.manifest import ViewList
    from gpu_batch.worker.results import ViewTarget

    rows = {"a.jpg": {"site": "J01", "season": "S1"}, "b.jpg": {"site": "J02"}}

    def read(name: str) -> tuple[bytes, str]:
        if not readable or name != "s1/image-list.json":
            raise ValueError(f"cannot read blob {name}")
        return json.dumps({"not_found": [], "metadata": rows}).encode(), '"0xLIST"'

    results, view_sink = _EtagSink(), _EtagSink()
    w = ResultWriter(results, {}, flush_seconds=60, view=ViewTarget(
        view_sink, "task-v", 0.2, ["a.jpg", "b.jpg"], "0xM", None, read, ViewList("s1/image-list.json",
                                                                                  ("site", "season"))))
    w.start()
    w.add(detections_entry("a.jpg", [{"category": "1", "conf": 0.9, "bbox": [0.1, 0.1, 0.2, 0.2]}], 640, 480))
    w.add(detections_entry("b.jpg", [], 640, 480))
    w.close({"complete": True})
    view = read_view(view_sink.data)
    assert view is not None and view.matches("task-v", 0.2, f"0x{results.writes:04X}", "0xM")
    assert (view.list_etag, view.list_columns) == (("0xLIST", ("site", "season")) if readable else ("", ()))
    assert view.zooniverse is not None
    assert (b",J01,S1\r\n" in view.zooniverse.rows) is readable


class _FlakySink:
    """A results blob whose writes fail while ``failing`` is set (a storage outage), then land again."""

    def __init__(self) -> None:
        self.failing = False
        self.data: bytes | None = None

    def read(self) -> bytes | None:
        return self.data

    def write(self, data: bytes) -> str:
        if self.failing:
            raise OutputNotWritable("storage outage")
        self.data = data
        return "etag"

    def describe(self) -> str:
        return "flaky"


def _wait(check: Callable[[], bool], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_a_storage_outage_shorter_than_outage_s_costs_the_shard_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """One flush failing its three tries stopped the writer for good: the shard lost its attempt (exit 4) and every
    entry since the last flush that landed, though storage came back seconds later."""
    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(lambda s: None))  # the flush's own short retries
    sink = _FlakySink()
    tries: list[bytes] = []
    real_write = sink.write

    def counted(data: bytes) -> str:
        tries.append(data)
        return real_write(data)

    sink.write = counted  # type: ignore[method-assign]
    w = ResultWriter(sink, {}, flush_seconds=0.05)
    w.start()
    sink.failing = True
    w.add(detections_entry("a.jpg", [], 640, 480))
    assert _wait(lambda: len(tries) >= 9)  # three flushes failed, three tries each
    assert w.error is None and w._thread.is_alive()
    sink.failing = False
    assert _wait(lambda: sink.data is not None and b"a.jpg" in sink.data)  # a later flush, without another add
    w.close()
    assert w.error is None


def test_an_outage_longer_than_outage_s_ends_the_shard_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(lambda s: None))
    monkeypatch.setattr(ResultWriter, "OUTAGE_S", 0.0)
    sink = _FlakySink()
    w = ResultWriter(sink, {}, flush_seconds=0.05)
    w.start()
    sink.failing = True
    w.add(detections_entry("a.jpg", [], 640, 480))
    w._thread.join(timeout=60)
    assert isinstance(w.error, OutputNotWritable)
    with pytest.raises(OutputNotWritable):
        w.close()


def test_an_outage_over_the_shards_end_is_waited_out_by_the_last_flush(monkeypatch: pytest.MonkeyPatch) -> None:
    """close() made only the flush's three quick tries: an outage over the shard's end cost its attempt and every
    entry since the last flush that landed."""
    waits: list[float] = []
    sink = _FlakySink()
    w = ResultWriter(sink, {}, flush_seconds=60)
    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(waits.append))
    w.start()
    w.add(detections_entry("a.jpg", [], 640, 480))
    sink.failing = True
    real_sleep = waits.append

    def recover_later(seconds: float) -> None:
        real_sleep(seconds)
        if len(waits) >= 7:  # two final-flush rounds of three quick tries, and a wait
            sink.failing = False

    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(recover_later))
    w.close({"complete": True})
    assert sink.data is not None and b"a.jpg" in sink.data and ResultWriter.CLOSE_RETRY_S in waits


class _TakenSink(_EtagSink):
    """A results sink another run of the attempt takes after ``taken_after`` writes (``OutputTaken`` from then on)."""

    def __init__(self, taken_after: int) -> None:
        super().__init__()
        self.taken_after = taken_after
        self.tries = 0

    def write(self, data: bytes) -> str | None:
        from gpu_batch.worker.results import OutputTaken

        self.tries += 1
        if self.writes >= self.taken_after:
            raise OutputTaken("taken by another run")
        return super().write(data)


def _targets() -> tuple[_EtagSink, _EtagSink, _EtagSink, dict[str, object]]:
    from gpu_batch.worker.results import CoverageTarget, ViewTarget

    progress, summary, view = _EtagSink(), _EtagSink(), _EtagSink()
    return progress, summary, view, {"progress": progress, "coverage": CoverageTarget(summary, ["a.jpg"], "0xM"),
                                     "view": ViewTarget(view, "task-t", 0.2, ["a.jpg"], "0xM")}


def test_a_taken_output_at_the_last_flush_is_not_retried_and_leaves_summary_and_view_unwritten(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``OutputTaken`` is no outage: the final flush's outage tolerance (OUTAGE_S) and the flush's quick retries
    would each have tried again, and the coverage summary and merge view would describe the other run's results."""
    from gpu_batch.worker.results import OutputTaken

    waits: list[float] = []
    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(waits.append))
    results = _TakenSink(taken_after=1)
    progress, summary, view, targets = _targets()
    w = ResultWriter(results, {}, flush_seconds=60, **targets)  # type: ignore[arg-type]
    w.start()
    w.add(detections_entry("a.jpg", [], 640, 480))
    with pytest.raises(OutputTaken):
        w.close({"complete": True})
    assert results.tries == 2 and waits == []  # the start's write, then one try of the last flush
    assert progress.writes == 1 and summary.data is None and view.data is None
    w.write_view()  # a resident worker's deferred view: still the last flush that landed, not the final document
    assert view.data is None


def test_a_taken_output_stops_the_flushing_thread_at_once_not_after_outage_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpu_batch.worker.results import OutputTaken

    monkeypatch.setattr(ResultWriter, "retry_sleep", staticmethod(lambda s: None))
    results = _TakenSink(taken_after=1)
    progress, summary, view, targets = _targets()
    w = ResultWriter(results, {}, flush_seconds=0.05, **targets)  # type: ignore[arg-type]
    w.start()
    w.add(detections_entry("a.jpg", [], 640, 480))
    w._thread.join(timeout=60)
    assert not w._thread.is_alive() and isinstance(w.error, OutputTaken) and results.tries == 2
    with pytest.raises(OutputTaken):
        w.close({"complete": True})
    assert results.tries == 2 and progress.writes == 1 and summary.data is None and view.data is None


class _Uploads:
    """A blob client that records each upload's conditions and answers with a new ETag (or raises ``fail``)."""

    def __init__(self, stored: bytes | None, etag: str = '"0x1"') -> None:
        self.stored, self.etag = stored, etag
        self.calls: list[dict[str, object]] = []
        self.fail: Exception | None = None

    def download_blob(self) -> object:
        from types import SimpleNamespace

        from azure.core.exceptions import ResourceNotFoundError

        if self.stored is None:
            raise ResourceNotFoundError("absent")
        data = self.stored
        return SimpleNamespace(readall=lambda: data, properties=SimpleNamespace(etag=self.etag))

    def upload_blob(self, data: bytes, **kwargs: object) -> dict[str, str]:
        self.calls.append(kwargs)
        if self.fail is not None:
            raise self.fail
        self.stored, self.etag = data, f'"0x{len(self.calls) + 1}"'
        return {"etag": self.etag}


def _sink(client: _Uploads) -> object:
    from types import SimpleNamespace

    from gpu_batch.worker.sources import BlobSink

    return BlobSink(SimpleNamespace(get_blob_client=lambda c, n: client), "state", "r.json")


def _storage_error(status: int, code: str | None) -> Exception:
    from azure.core import exceptions as az

    cls = {412: az.ResourceModifiedError, 409: az.ResourceExistsError}.get(status, az.HttpResponseError)
    exc = cls(message=f"{status} {code}")
    exc.status_code, exc.error_code = status, code
    return exc


def test_the_blob_sinks_conditions_follow_what_it_read_and_wrote() -> None:
    from azure.core import MatchConditions

    unread = _Uploads(b"{}")
    _sink(unread).write(b"x")  # type: ignore[attr-defined]
    assert unread.calls == [{"overwrite": True}]  # progress, coverage and view sinks: never read, never conditional

    found = _Uploads(b"{}", '"0xREAD"')
    sink = _sink(found)
    assert sink.read() == b"{}"  # type: ignore[attr-defined]
    assert sink.write(b"a") == "0x2" and sink.write(b"b") == "0x3"  # type: ignore[attr-defined]
    assert found.calls == [{"overwrite": True, "etag": '"0xREAD"', "match_condition": MatchConditions.IfNotModified},
                           {"overwrite": True, "etag": '"0x2"', "match_condition": MatchConditions.IfNotModified}]

    absent = _Uploads(None)
    sink = _sink(absent)
    assert sink.read() is None  # type: ignore[attr-defined]
    sink.write(b"a")  # type: ignore[attr-defined]
    assert absent.calls == [{"overwrite": True, "match_condition": MatchConditions.IfMissing}]


@pytest.mark.parametrize("status, code, taken", [(412, "ConditionNotMet", True), (409, "BlobAlreadyExists", True),
                                                 (412, None, True), (412, "LeaseIdMissing", False),
                                                 (409, "LeaseAlreadyPresent", False), (503, "ServerBusy", False),
                                                 (403, "AuthorizationFailure", False)])
def test_only_a_failed_condition_is_a_taken_output(status: int, code: str | None, taken: bool) -> None:
    from gpu_batch.worker.results import OutputTaken
    from gpu_batch.worker.sources import condition_failed

    assert condition_failed(_storage_error(status, code)) is taken
    client = _Uploads(b"{}")
    sink = _sink(client)
    sink.read()  # type: ignore[attr-defined]
    client.stored = b"the other run's"
    client.fail = _storage_error(status, code)
    with pytest.raises(OutputTaken if taken else OutputNotWritable):
        sink.write(b"mine")  # type: ignore[attr-defined]
    client.fail = None
    if taken:  # stopped for good: nothing more is sent
        with pytest.raises(OutputTaken):
            sink.write(b"mine")  # type: ignore[attr-defined]
        assert len(client.calls) == 1
    else:  # an outage: the next flush tries again
        sink.write(b"mine")  # type: ignore[attr-defined]
        assert client.stored == b"mine"


def test_a_flush_whose_answers_were_all_lost_but_landed_is_no_taken_output() -> None:
    """Every try of a flush lost its answer (OutputNotWritable) though the write landed: the next flush's condition
    then fails on this run's own earlier bytes, which is no other run's write; it replaces them on their ETag.
    Before, the attempt stopped as OutputTaken and its images ran again (blob storage audit)."""
    from azure.core import MatchConditions

    client = _Uploads(b"{}", '"0xREAD"')
    sink = _sink(client)
    sink.read()  # type: ignore[attr-defined]

    landed_but_lost = _storage_error(503, "OperationTimedOut")
    original_upload = client.upload_blob

    def upload_then_lose(data: bytes, **kwargs: object) -> dict[str, str]:
        original_upload(data, **kwargs)  # it lands...
        raise landed_but_lost  # ...and every answer is lost

    client.upload_blob = upload_then_lose  # type: ignore[method-assign]
    with pytest.raises(OutputNotWritable):
        sink.write(b"flush 1")  # type: ignore[attr-defined]
    assert client.stored == b"flush 1"
    client.upload_blob = original_upload  # type: ignore[method-assign]
    landed_etag = client.etag

    def conditional(data: bytes, **kwargs: object) -> dict[str, str]:
        if kwargs.get("etag") not in (None, client.etag):
            client.calls.append(kwargs)
            raise _storage_error(412, "ConditionNotMet")
        return original_upload(data, **kwargs)

    client.upload_blob = conditional  # type: ignore[method-assign]
    assert sink.write(b"flush 2")  # type: ignore[attr-defined]
    assert client.stored == b"flush 2"
    assert client.calls[-1] == {"overwrite": True, "etag": landed_etag,
                                "match_condition": MatchConditions.IfNotModified}
    # an outage over two flushes: the first lands unacknowledged, the second never arrives; the third still knows
    # the blob's bytes for its own
    client.upload_blob = upload_then_lose  # type: ignore[method-assign]
    with pytest.raises(OutputNotWritable):
        sink.write(b"flush 3")  # type: ignore[attr-defined]
    client.upload_blob = lambda data, **kwargs: (_ for _ in ()).throw(landed_but_lost)  # type: ignore[method-assign]
    with pytest.raises(OutputNotWritable):
        sink.write(b"flush 4")  # type: ignore[attr-defined]
    assert client.stored == b"flush 3"
    client.upload_blob = conditional  # type: ignore[method-assign]
    assert sink.write(b"flush 5") and client.stored == b"flush 5"  # type: ignore[attr-defined]
    client.stored = b"the other run's"  # another run's bytes are still another run's
    client.etag = '"0xOTHER"'
    from gpu_batch.worker.results import OutputTaken

    with pytest.raises(OutputTaken):
        sink.write(b"flush 6")  # type: ignore[attr-defined]


def test_a_local_results_file_gets_the_mode_open_would_give_and_old_temporaries_go(tmp_path: Path) -> None:
    """mkstemp makes its file 0600 and the rename kept it, so ``--output-file`` results were readable by their owner
    only (MegaDetector's file has the umask's mode); a run killed between writing and renaming left
    ``<name>.XXXX.tmp`` for ever. A new run's read removes those older than ``STALE_TEMPORARY_S``, never a fresh one
    (another run's, about to be renamed)."""
    import os

    from gpu_batch.worker import results as results_module

    out = tmp_path / "out.json"
    old = tmp_path / "out.json.abc123.tmp"
    fresh = tmp_path / "out.json.def456.tmp"
    other = tmp_path / "other.json.abc123.tmp"
    for leftover in (old, fresh, other):
        leftover.write_bytes(b"{")
    long_ago = time.time() - results_module.STALE_TEMPORARY_S - 60
    os.utime(old, (long_ago, long_ago))
    os.utime(other, (long_ago, long_ago))
    sink = results_module.FileSink(out)
    assert sink.read() is None
    sink.write(b"{}")
    assert not old.exists() and fresh.exists() and other.exists()
    assert out.stat().st_mode & 0o777 == 0o666 & ~results_module._UMASK


class _GatedSink:
    """A sink whose writes wait at a gate, counting how many run at once (a blob's conditional writes race)."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.writes = 0

    def read(self) -> bytes | None:
        return None

    def write(self, data: bytes) -> str | None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.writes += 1
            first_gated = self.writes == 2  # the start() write passes; the flushing thread's first one waits
        if first_gated:
            self.entered.set()
            self.gate.wait(30)
        with self.lock:
            self.running -= 1
        return '"0x1"'

    def describe(self) -> str:
        return "gated"


def test_a_flush_due_on_the_adding_thread_waits_for_the_flushing_threads_write() -> None:
    """Fault injection (``crash_after``/``pause_after``: ``flush_at_new``) flushes on the adding thread while the
    flushing thread may be writing: two writes of one blob at once, each conditional on the same ETag, and the loser
    took the winner's bytes for another run's (``OutputTaken``, exit 73: a loaded CI run's two-writer test ended its
    first run so). Flushes of one writer now take turns."""
    import threading

    sink = _GatedSink()
    w = ResultWriter(sink, {}, flush_seconds=0.05, flush_at_new=3)
    w.start()
    w.add(failure_entry("a.jpg", "x", "download"))
    assert sink.entered.wait(30), "the flushing thread never wrote"
    adder = threading.Thread(target=lambda: [w.add(failure_entry(n, "x", "download")) for n in ("b.jpg", "c.jpg")])
    adder.start()
    time.sleep(0.5)  # without turns, the adding thread's flush is inside write by now
    sink.gate.set()
    adder.join(30)
    w.close()
    assert sink.most == 1
