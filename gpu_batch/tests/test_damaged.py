"""Photos cut short: a JPEG without its end-of-image marker is decoded as far as it goes (as MegaDetector does) and
keeps MegaDetector's entry, but the attempt names it, on the CPU and the CUDA decode path alike.

Why: a camera that lost power mid-write or a partial copy leaves such files, and the ecologist should re-copy them
from the cards; before, they counted as whole photos and nobody learnt of them.
"""
from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.tests.test_results import _EtagSink
from gpu_batch.worker.loader import LoadedModel, load_model
from gpu_batch.worker.pipeline import PipelineOptions, ShardSummary, run_images
from gpu_batch.formats.jpeg_end import jpeg_cut_short
from gpu_batch.worker.results import (FileSink, ResultWriter, damaged_document, detections_entry,
                                      load_resumable_state)
from gpu_batch.worker.sources import LocalFolderSource


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _images() -> dict[str, bytes]:
    whole = jpeg_bytes(textured(320, 240, 5))
    cut = whole[: len(whole) * 2 // 3]
    return {
        "whole.jpg": whole,
        "truncated.jpg": cut,  # a partial copy
        "zero-filled.jpg": cut + b"\0" * (len(whole) - len(cut)),  # a preallocated file the camera never finished
        "zero-padded.jpg": whole + b"\0" * 70_000,  # whole, then padding some cameras write (past one tail window)
        "ff-padded.jpg": whole + b"\xff" * 16,
        "trailer.jpg": whole + b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 4,  # a motion photo's video after the end
        "image.png": _png(textured(150, 90, 9)),
        "broken.jpg": b"\xff\xd8not a jpeg at all",  # fails to decode: a failure, never "damaged"
    }


CUT_SHORT = {"truncated.jpg", "zero-filled.jpg"}


def test_a_jpeg_is_cut_short_only_when_its_end_marker_is_missing_before_any_padding() -> None:
    images = _images()
    assert {name for name, data in images.items() if jpeg_cut_short(data)} == CUT_SHORT | {"broken.jpg"}
    assert not jpeg_cut_short(b"") and not jpeg_cut_short(b"\xff")
    assert jpeg_cut_short(b"\xff\xd8" + b"\0" * 200_000)  # nothing but padding after the start marker


def test_a_jpeg_whose_segments_cannot_be_walked_is_judged_by_its_tail_alone_past_zero_or_ff_padding() -> None:
    # Junk where the first marker belongs: the search for the end marker has no scan to start after, so only the
    # bytes before any padding decide, as the docstring promises (zeros and 0xFF both padding).
    body = b"\xff\xd8\x00\xda" + jpeg_bytes(textured(64, 48, 3))[2:]
    assert not jpeg_cut_short(body)
    assert not jpeg_cut_short(body + b"\0" * 100) and not jpeg_cut_short(body + b"\xff" * 100)
    assert jpeg_cut_short(body + b"after its end")  # an end marker inside is no proof without a scan to follow


def test_fill_bytes_and_length_free_markers_before_the_scan_do_not_make_a_motion_photo_cut_short() -> None:
    # JPEG lets any marker be preceded by 0xFF fill bytes, and TEM/RSTn carry no length: the walk to the first
    # scan must step over both, or a whole photo with a trailer (a motion photo's video) is called damaged.
    whole = jpeg_bytes(textured(64, 48, 4))
    trailer = b"\0\0\0\x18ftypmp42" + bytes(range(256)) * 4
    for extra in (b"\xff", b"\xff\x01", b"\xff\xd0"):  # a fill byte, TEM, RST0
        data = whole[:2] + extra + whole[2:]
        assert not jpeg_cut_short(data + trailer), extra
        assert jpeg_cut_short(data[: len(data) * 2 // 3]), extra


def test_the_gpu_decode_takes_a_whole_jpeg_padded_with_zeros_or_ff_fill_and_leaves_the_rest_to_the_cpu() -> None:
    """``devices.gpu_decodable_jpeg`` (header read for nvJPEG / the hardware engine; None: the exact CPU decode):
    a whole JPEG followed by zeros, 0xFF fill or both (cameras pad to a sector) goes to the GPU, as the unpadded one;
    a file cut short goes to the CPU however it is padded, and so does other data after the marker. Before, 0xFF
    fill sent a whole photo to the slow CPU path. The exact decode of a padded file is the unpadded one's, pixel for
    pixel: bytes after the end-of-image marker change nothing a decoder makes."""
    from gpu_batch.formats.jpeg_end import ends_at_eoi
    from gpu_batch.worker.devices import gpu_decodable_jpeg
    from gpu_batch.worker.preprocess import decode_image

    images = _images()
    whole, cut = images["whole.jpg"], images["truncated.jpg"]
    header = gpu_decodable_jpeg(whole)
    assert header == (240, 320, 0, None)
    for padding in (b"\0" * 70_000, b"\xff", b"\xff" * 16, b"\xff" * 70_000, b"\xff\0" * 300, b"\0" * 5 + b"\xff" * 5):
        assert ends_at_eoi(whole + padding) and gpu_decodable_jpeg(whole + padding) == header, padding[:4]
        assert (decode_image(whole + padding) == decode_image(whole)).all()
    for damaged in (cut, cut + b"\0" * 100, cut + b"\xff" * 100, images["zero-filled.jpg"], whole[:-1] + b"\xff" * 8,
                    whole[:-2], images["trailer.jpg"], images["image.png"], b"", b"\xff", b"\xff\xd9"):
        assert gpu_decodable_jpeg(damaged) is None, damaged[-4:]


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> LoadedModel:
    return replace(load_model(checkpoint, device="cpu", image_size=256), stride=64)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("damaged")
    for name, data in _images().items():
        (root / name).write_bytes(data)
    return root


def test_the_cpu_pipeline_names_the_cut_short_jpegs_and_leaves_their_entries_as_megadetector_writes_them(
        model: LoadedModel, folder: Path, tmp_path: Path) -> None:
    names = sorted(_images())
    sink = FileSink(tmp_path / "out.json")
    writer = ResultWriter(sink, {"detector": "test", "trapbatch": {"shard_id": "s0"}}, flush_seconds=60)
    summary = ShardSummary(images=len(names))
    writer.start()
    try:
        run_images(names, LocalFolderSource(folder), model, writer, 0.005, PipelineOptions(batch_size=3, workers=2),
                   summary)
    finally:
        writer.close()
    doc = json.loads(sink.read() or b"")
    entries = {e["file"]: e for e in doc["images"]}
    assert doc["info"]["trapbatch"] == {"shard_id": "s0", "damaged": sorted(CUT_SHORT)}
    assert summary.damaged == 2 and summary.to_dict()["damaged"] == 2
    for name in CUT_SHORT:  # a success with MegaDetector's keys only: the results do not change
        assert set(entries[name]) == {"file", "detections", "width", "height"}, entries[name]
    assert "failure" in entries["broken.jpg"] and "failure" not in entries["image.png"]


def test_the_cuda_stages_mark_the_cut_short_jpegs_they_decode_exactly_and_not_the_header_path(
        model: LoadedModel, folder: Path) -> None:
    from gpu_batch.tests.test_image_size import _cuda_stages_on_cpu

    stages = _cuda_stages_on_cpu(model)
    source = LocalFolderSource(folder)
    prepared = {name: stages.prepare(source, name) for name in _images()}
    assert {name for name, it in prepared.items() if it.damaged} == CUT_SHORT
    assert all(prepared[name].pixels is not None for name in CUT_SHORT)  # the exact PIL decode, gray fill
    # nvJPEG's path: zeros or 0xFF fill after the end marker are no damage
    assert all(prepared[name].jpeg is not None for name in ("whole.jpg", "zero-padded.jpg", "ff-padded.jpg"))


def test_the_damaged_list_follows_every_flush_with_the_results_etag_and_a_resumed_run_keeps_it() -> None:
    results, listed = _EtagSink(), _EtagSink()
    w = ResultWriter(results, {"trapbatch": {}}, flush_seconds=60, damaged_sink=listed)
    w.start()
    assert listed.data is None  # none cut short: nothing written
    w.add(detections_entry("b.jpg", [], 64, 48), damaged=True)
    w.add(detections_entry("a.jpg", [], 64, 48))
    w.flush()
    assert json.loads(listed.data or b"") == json.loads(damaged_document("0x0002", ["b.jpg"]))
    w.add(detections_entry("c.jpg", [], 64, 48), damaged=True)
    w.close({"trapbatch": {"complete": True}})
    assert json.loads(listed.data or b"") == {"version": 1, "results_etag": "0x0003", "damaged": ["b.jpg", "c.jpg"]}
    assert json.loads(results.data or b"")["info"]["trapbatch"] == {"complete": True, "damaged": ["b.jpg", "c.jpg"]}

    kept, damaged = load_resumable_state(results, ["a.jpg", "b.jpg"])  # c.jpg is no longer in the manifest
    assert set(kept) == {"a.jpg", "b.jpg"} and damaged == {"b.jpg"}
    again = _EtagSink()
    resumed = ResultWriter(again, {}, initial=kept, damaged=damaged, flush_seconds=60)
    resumed.start()
    resumed.close()
    assert json.loads(again.data or b"")["info"]["trapbatch"] == {"damaged": ["b.jpg"]}


def test_a_blob_shard_writes_its_damaged_list_beside_its_results() -> None:
    from types import SimpleNamespace

    from gpu_batch import layout
    from gpu_batch.manifest import ShardManifest
    from gpu_batch.worker.__main__ import _damaged_sink

    opened: list[tuple[str, str]] = []
    service = SimpleNamespace(get_blob_client=lambda container, name: opened.append((container, name)))
    manifest: Any = ShardManifest(task_id="task-0123456789abcdef0123", shard_id="s00007", attempt=2,
                                  source_container="cams", images=("a.jpg",), output_container="state",
                                  output_blob="x", model="m.pt")
    assert _damaged_sink(True, service, manifest) is not None
    assert opened == [("state", layout.attempt_damaged_blob("task-0123456789abcdef0123", "s00007", 2))]
    assert _damaged_sink(False, None, manifest) is None


class _UnwritableSink:
    """A side list whose every write fails (an outage over the whole attempt: the list is best effort)."""

    def read(self) -> bytes | None:
        return None

    def write(self, data: bytes) -> str | None:
        from gpu_batch.worker.results import OutputNotWritable

        raise OutputNotWritable("storage outage")

    def describe(self) -> str:
        return "unwritable sink"


def test_a_later_attempts_view_names_every_attempts_photos_cut_short_from_what_it_reads_anyway() -> None:
    """Attempt 1 named b.jpg cut short in its results and died before its list (``layout.attempt_damaged_blob``);
    attempt 2 cuts c.jpg short and none of its list's writes land. The merge takes attempt 2's view of the whole
    shard and reads neither the results nor the lists: the view names both, from the documents its worker parsed for
    it (each blob read once, as before)."""
    from gpu_batch.formats.mergeview import read_view
    from gpu_batch.manifest import ShardManifest, ViewBasis
    from gpu_batch.worker.results import ViewTarget, failure_entry

    first = ShardManifest(task_id="task-v", shard_id="s00001", attempt=1, source_container="cams",
                          images=("a.jpg", "b.jpg", "c.jpg"), output_container="state", output_blob="r1",
                          model="m.pt")
    earlier = {"images": [detections_entry("a.jpg", [], 64, 48), detections_entry("b.jpg", [], 64, 48),
                          failure_entry("c.jpg", "image access failure", "download")],
               "info": {"trapbatch": {"damaged": ["b.jpg"]}}}
    blobs = {"m1": (json.dumps(first.to_dict()).encode(), '"0xM1"'), "r1": (json.dumps(earlier).encode(), '"0xR1"')}
    reads: list[str] = []

    def read(name: str) -> tuple[bytes, str]:
        reads.append(name)
        return blobs[name]

    results, view_sink = _EtagSink(), _EtagSink()
    w = ResultWriter(results, {}, flush_seconds=60, damaged_sink=_UnwritableSink(),
                     view=ViewTarget(view_sink, "task-v", 0.2, ["c.jpg"], "0xM2", ViewBasis("m1", ("r1",)), read))
    w.start()
    w.add(detections_entry("c.jpg", [], 64, 48), damaged=True)
    w.close({"trapbatch": {"complete": True}})

    view = read_view(view_sink.data)
    assert view is not None and view.matches("task-v", 0.2, f"0x{results.writes:04X}", "0xM1", {"r1": "0xR1"})
    assert view.damaged == ("b.jpg", "c.jpg")
    assert reads == ["m1", "r1"]  # nothing read for the names
    assert json.loads(results.data or b"")["info"]["trapbatch"]["damaged"] == ["c.jpg"]  # its own, as before


def test_a_view_without_names_is_one_whose_worker_did_not_name_them_and_an_empty_list_is_none_cut_short() -> None:
    """A view of a worker older than the names has no ``damaged`` in its header: ``None``, so the merge reads the
    attempts' lists for it; a newer worker's view of a shard without any says ``[]``: the merge reads nothing more."""
    from gpu_batch.formats.mergeview import build_view, read_view

    view = build_view("task-v", 0.2, ["a.jpg"], [detections_entry("a.jpg", [], 64, 48)], "0xR", "0xM")
    assert view is not None
    parsed = read_view(view)
    assert parsed is not None and parsed.damaged == ()
    head, body = view.split(b"\n", 1)
    older = json.loads(head)
    del older["damaged"]
    parsed = read_view(json.dumps(older, separators=(",", ":")).encode() + b"\n" + body)
    assert parsed is not None and parsed.damaged is None
