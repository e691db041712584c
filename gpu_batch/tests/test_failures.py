"""Retryable and permanent per-image failures through real worker runs: a source that answers 403 for some images on
attempt 1 (fault injection), and a corrupt image. The retryable ones are left for the next attempt and succeed there;
the corrupt one is final after its first run and never run again, neither by a restart of the same attempt nor by
the resubmission. The resubmission is computed here with the contract's own rule (``gpu_batch.manifest.is_final``),
the one ``core.mdformat.final_files`` / ``activities.shard_results.done_images`` apply in the app."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpu_batch import manifest as contract
from gpu_batch.tests.conftest import run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker.faults import Fault, FaultSpecError
from gpu_batch.worker.preprocess import ImageAccessError
from gpu_batch.worker.sources import LocalFolderSource, SourceError

FAULT = {"TRAPBATCH_WORKER_FAULT": "fetch_error:403:cam2/"}


@pytest.fixture
def shard(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "images"
    names = [f"cam1/img{i:02d}.jpg" for i in range(4)] + [f"cam2/img{i:02d}.jpg" for i in range(3)]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg_bytes(textured(160, 120, 70 + i)))
    (folder / "cam1/corrupt.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg" * 20)
    return folder, names + ["cam1/corrupt.jpg"]


def _run(tmp_path: Path, folder: Path, checkpoint: Path, images: list[str], attempt: int, out: Path,
         ) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    manifest = write_manifest(tmp_path / f"m{attempt}.json", images, str(checkpoint), attempt=attempt)
    proc = run_worker_cli(["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file", str(out),
                           "--device", "cpu", "--workers", "2"], FAULT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {e["file"]: e for e in json.loads(out.read_text())["images"]}, summary_line(proc)


def test_403s_are_retried_by_the_next_attempt_and_a_corrupt_image_runs_once(shard: tuple[Path, list[str]],
                                                                              checkpoint: Path, tmp_path: Path) -> None:
    folder, names = shard
    cam2 = [n for n in names if n.startswith("cam2/")]
    out1 = tmp_path / "attempt-1.results.json"
    first, summary = _run(tmp_path, folder, checkpoint, names, 1, out1)
    for name in cam2:
        assert first[name] == {"file": name, "failure": "image access failure", "detections": None,
                               "failure_kind": "retryable", "failure_reason": "auth"}
    assert first["cam1/corrupt.jpg"]["failure_kind"] == "permanent"
    assert first["cam1/corrupt.jpg"]["failure_reason"] == "undecodable"
    assert all("failure" not in first[n] for n in names[:4])
    assert all((first[n]["width"], first[n]["height"]) == (160, 120) for n in names[:4])  # failures have none (above)
    assert summary == {**summary, "done": 8, "failed": 4, "retryable": 3,
                       "failure_reasons": {"auth": 3, "undecodable": 1}}

    # The same attempt restarted (a pool-level retry of the task): successes and the corrupt image are kept, the
    # retryable failures are run again (still refused: the fault holds for attempt 1).
    again, summary = _run(tmp_path, folder, checkpoint, names, 1, out1)
    assert summary["skipped_resumed"] == 5 and summary["done"] == 3 and summary["retryable"] == 3
    assert again["cam1/corrupt.jpg"] == first["cam1/corrupt.jpg"]
    assert all(again[n] == first[n] for n in names[:4])  # kept as written, image sizes included

    # The resubmission: every image without a final entry, which is exactly the refused ones.
    final = {n for n, e in again.items() if contract.is_final(e)}
    resubmit = [n for n in names if n not in final]
    assert resubmit == cam2
    second, summary = _run(tmp_path, folder, checkpoint, resubmit, 2, tmp_path / "attempt-2.results.json")
    assert set(second) == set(cam2) and all("failure" not in e for e in second.values())
    assert all((e["width"], e["height"]) == (160, 120) for e in second.values())
    assert summary["failed"] == 0 and summary["failure_reasons"] == {}
    assert final | set(second) == set(names)  # every image now has a final result


def test_fetch_error_fault_spec_and_scope(tmp_path: Path) -> None:
    fault = Fault.from_env({"TRAPBATCH_WORKER_FAULT": "fetch_error:503"})
    assert (fault.kind, fault.value, fault.text) == ("fetch_error", 503, "")
    for bad in ("fetch_error", "fetch_error:x", "fetch_error::cam"):
        with pytest.raises(FaultSpecError, match="fetch_error:STATUS"):
            Fault.from_env({"TRAPBATCH_WORKER_FAULT": bad})
    (tmp_path / "a.jpg").write_bytes(b"x")
    source = LocalFolderSource(tmp_path)
    assert fault.wrap_source(source, attempt=2) is source  # later attempts read normally
    with pytest.raises(SourceError) as info:
        fault.wrap_source(source, attempt=1).fetch("a.jpg")
    assert info.value.reason == "throttled" and info.value.retryable
    assert Fault.from_env({}).wrap_source(source, attempt=1) is source


@pytest.mark.parametrize("raised, failure, reason", [
    (MemoryError(), "inference failure", contract.REASON_INFERENCE),  # the node's memory: the next attempt retries
    # the decoder's words for bad bytes: final
    (ImageAccessError("cannot identify image file"), "image access failure", contract.REASON_UNDECODABLE),
    # anything else is the worker's (a bug, a broken node), not the photo's: tried again, not called corrupt
    (ValueError("could not broadcast input array"), "image access failure", contract.REASON_WORKER_ERROR),
    (TypeError("'NoneType' object is not subscriptable"), "image access failure", contract.REASON_WORKER_ERROR),
    (AttributeError("'Prepared' object has no attribute 'x'"), "image access failure", contract.REASON_WORKER_ERROR),
    (RuntimeError("CUDA out of memory"), "image access failure", contract.REASON_WORKER_ERROR),
])
def test_what_a_decode_raises_decides_whether_the_image_is_tried_again(tmp_path: Path, raised: Exception,
                                                                        failure: str, reason: str) -> None:
    from gpu_batch.worker.batching import prepared_failure
    from gpu_batch.worker.devices import CpuStages

    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(textured(64, 48, 1)))
    stages = CpuStages.__new__(CpuStages)

    def decode(data: bytes, name: str) -> Any:
        raise raised

    stages._prepare = decode  # type: ignore[method-assign]
    entry = prepared_failure(stages.prepare(LocalFolderSource(tmp_path), "a.jpg"))
    assert (entry["failure"], contract.failure_reason(entry)) == (failure, reason)
    assert contract.failure_kind(entry) == contract.FAILURE_REASONS[reason]


@pytest.mark.parametrize("data", [
    b"\xff\xd8\xff not really a jpeg" * 20,  # PIL: UnidentifiedImageError ("cannot identify image file")
    b"",  # zero bytes
    jpeg_bytes(textured(64, 48, 1))[:400],  # cut inside its header: OSError from the decoder
])
def test_bad_bytes_stay_undecodable_through_the_real_decoder(tmp_path: Path, data: bytes) -> None:
    """What Pillow raises for bad input (preprocess.BAD_FILE_ERRORS) still makes a final ``undecodable`` failure."""
    from gpu_batch.worker.batching import prepared_failure
    from gpu_batch.worker.devices import CpuStages

    (tmp_path / "a.jpg").write_bytes(data)
    stages = CpuStages.__new__(CpuStages)
    stages.model = type("M", (), {"image_size": 64, "stride": 32})()
    entry = prepared_failure(stages.prepare(LocalFolderSource(tmp_path), "a.jpg"))
    assert (entry["failure"], contract.failure_reason(entry)) == ("image access failure", contract.REASON_UNDECODABLE)
    assert contract.failure_kind(entry) == contract.PERMANENT


def test_a_worker_error_is_logged_with_its_traceback_once_per_shard(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A bug that fails every photo must be seen: one traceback per shard's stages, a line for each other image."""
    from gpu_batch.worker.devices import CpuStages

    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(jpeg_bytes(textured(64, 48, 1)))

    def broken(data: bytes, name: str) -> Any:
        raise TypeError("unsupported operand type(s)")

    for shard in range(2):
        stages = CpuStages.__new__(CpuStages)
        stages._prepare = broken  # type: ignore[method-assign]
        caplog.clear()
        for name in ("a.jpg", "b.jpg"):
            stages.prepare(LocalFolderSource(tmp_path), name)
        traced = [r for r in caplog.records if r.exc_info]
        assert len(traced) == 1 and "worker error" in traced[0].getMessage(), shard
        assert traced[0].exc_info and traced[0].exc_info[0] is TypeError
        assert sum("worker_error" in r.getMessage() for r in caplog.records) == 1  # the second image: a line


@pytest.mark.parametrize("raised", [NotImplementedError("unsupported BMP compression"), OverflowError("too large"),
                                    SyntaxError("not a TIFF file"), OSError("image file is truncated")])
def test_what_pillow_raises_for_bad_input_is_undecodable(monkeypatch: pytest.MonkeyPatch,
                                                         raised: Exception) -> None:
    """Pillow's own list of what bad input raises (its fuzz test) is a bad file, final; NotImplementedError and
    OverflowError were not on the decoder's list, so they would have read as worker errors and been run again."""
    from PIL import Image

    from gpu_batch.worker import preprocess

    def opening(*_: Any, **__: Any) -> Any:
        raise raised

    monkeypatch.setattr(Image, "open", opening)
    with pytest.raises(ImageAccessError) as info:
        preprocess.decode_image_and_time(b"bytes")
    assert info.value.reason == contract.REASON_UNDECODABLE
