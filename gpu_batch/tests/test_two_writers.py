"""Two runs of one shard attempt: the stale one must not overwrite the results the other finished.

Azure Batch reruns a task whose node it lost, even with ``max_task_retry_count=0`` (``activities/pool.py``), while the
first process may live on, cut off, and flush again later. Every flush rewrites the whole document from the writer's
memory, so that flush replaced the finished results with a smaller set, and the merge then turned every image only the
rerun processed into a ``not_processed`` failure. The worker's results writes are conditional on what it read or
last wrote (``BlobSink``, ``FileSink``); the stale run stops at its next write with ``exit_codes.OUTPUT_TAKEN``.

The real worker CLI runs both writers: the first pauses itself (``pause_after:K``, SIGSTOP) once K results are
flushed, the second runs the same attempt to the end, then the first is continued (SIGCONT).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from azure.core import MatchConditions
from azure.storage.blob import BlobServiceClient

from gpu_batch import exit_codes, layout
from gpu_batch.manifest import ShardManifest
from gpu_batch.tests.conftest import REPO_ROOT, run_worker_cli, summary_line, write_manifest
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker.results import FileSink, OutputTaken
from gpu_batch.worker.sources import BlobSink, condition_failed

# The runs use conftest.small_input_checkpoint (the test network at 256 px): who wins the results does not depend on
# the input size, and each of a test's ~13 forward passes costs ~1/25 of one at 1280 px.
IMAGES = 10
PAUSE_AFTER = 3
ARGS = ["--device", "cpu", "--workers", "1", "--batch-size", "1", "--flush-seconds", "0.1"]


def _start_paused(args: list[str], env_extra: dict[str, str]) -> subprocess.Popen[str]:
    """The first run: started with ``pause_after``; returns once it has stopped itself (its K results flushed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.update(env_extra, TRAPBATCH_WORKER_FAULT=f"pause_after:{PAUSE_AFTER}")
    proc = subprocess.Popen([sys.executable, "-m", "gpu_batch.worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT)
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if not os.WIFSTOPPED(status):  # it ended instead: Popen has lost its status, so report what it wrote
        raise AssertionError(f"the first run ended (status {status}) instead of pausing: {proc.stderr.read()[-3000:]}")
    return proc


def _continue(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Let the paused first run go on (the cut-off node comes back); its exit code and log.

    A second later than the second run's end, first: a first run that finished its images before its next flush
    wrote a final document byte for byte the second run's when both ended within one second (the only run-specific
    field, ``detection_completion_time``, has whole seconds), and a blob holding exactly the bytes a write meant to
    put is taken as that write's own landing (``BlobSink._own_write``): harmless (the same results), but exit 0,
    not the 73 these tests are about (one CI run in many)."""
    time.sleep(1.1)
    os.kill(proc.pid, signal.SIGCONT)
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, list[str]]:
    folder = tmp_path / "images"
    names = [f"cam/img{i:02d}.jpg" for i in range(IMAGES)]
    for i, name in enumerate(names):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(jpeg_bytes(textured(320, 240, 70 + i)))
    return folder, names


def test_a_stale_local_run_stops_at_its_first_write_and_the_finished_results_stay(
        images: tuple[Path, list[str]], small_input_checkpoint: Path, tmp_path: Path) -> None:
    folder, names = images
    manifest = write_manifest(tmp_path / "m.json", names, str(small_input_checkpoint))
    out = tmp_path / "attempt-1.results.json"
    args = ["--manifest-file", str(manifest), "--image-root", str(folder), "--output-file", str(out), *ARGS]
    first = _start_paused(args, {})
    assert len(json.loads(out.read_text())["images"]) == PAUSE_AFTER
    second = run_worker_cli(args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert summary_line(second)["skipped_resumed"] == PAUSE_AFTER
    finished = out.read_bytes()
    assert json.loads(finished)["info"]["trapbatch"]["complete"] is True

    code, err = _continue(first)
    assert code == exit_codes.OUTPUT_TAKEN, err[-3000:]
    assert "replaced by another run of this shard attempt" in err
    assert out.read_bytes() == finished  # every image, as the second run wrote them
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attempt-1.results.json", "images", "m.json"]  # no temp file


def test_a_stale_blob_run_stops_at_its_first_write_and_writes_nothing_more_for_the_attempt(
        storage_connection: str, unique_name: str, images: tuple[Path, list[str]], small_input_checkpoint: Path,
        tmp_path: Path) -> None:
    """Against Azurite: the stale run's write is refused (If-Match on Put Blob), and it writes neither its
    coverage summary nor its merge view, nor its progress counter, after that: all three stay the finished run's."""
    folder, names = images
    service = BlobServiceClient.from_connection_string(storage_connection)
    images_c, state_c = service.create_container(unique_name + "img"), service.create_container(unique_name + "st")
    for name in names:
        images_c.upload_blob(name, (folder / name).read_bytes())
    state_c.upload_blob("models/md_test.pt", small_input_checkpoint.read_bytes())
    task, sid = "task-tw", "s3"
    manifest = ShardManifest(task_id=task, shard_id=sid, attempt=1, source_container=images_c.container_name,
                             images=tuple(names), output_container=state_c.container_name,
                             output_blob=layout.attempt_results_blob(task, sid, 1),
                             model=f"blob://{state_c.container_name}/models/md_test.pt", merge_view_threshold=0.2)
    state_c.upload_blob(layout.manifest_blob(task, sid, 1), json.dumps(manifest.to_dict()))
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    args = ["--manifest-container", state_c.container_name, "--manifest-blob", layout.manifest_blob(task, sid, 1),
            *ARGS]
    blobs = [manifest.output_blob, layout.attempt_coverage_blob(task, sid, 1), layout.attempt_view_blob(task, sid, 1),
             layout.attempt_progress_blob(task, sid, 1)]

    def stored() -> list[tuple[bytes, str]]:
        out = []
        for name in blobs:
            download = state_c.download_blob(name)
            out.append((download.readall(), str(download.properties.etag)))
        return out

    first = _start_paused(args, env)
    assert len(json.loads(state_c.download_blob(manifest.output_blob).readall())["images"]) == PAUSE_AFTER
    second = run_worker_cli(args, env)
    assert second.returncode == 0, second.stderr[-3000:]
    assert summary_line(second)["skipped_resumed"] == PAUSE_AFTER
    finished = stored()
    doc = json.loads(finished[0][0])
    assert doc["info"]["trapbatch"]["complete"] is True and len(doc["images"]) == IMAGES

    code, err = _continue(first)
    assert code == exit_codes.OUTPUT_TAKEN, err[-3000:]
    assert "replaced by another run of this shard attempt" in err
    assert stored() == finished  # bytes and ETags: results, coverage summary, merge view, progress counter


def test_azurite_honours_if_match_and_if_none_match_on_put_blob(storage_connection: str, unique_name: str) -> None:
    """What the worker's conditional writes rely on, asked of the emulator the tests run against."""
    service = BlobServiceClient.from_connection_string(storage_connection)
    blob = service.create_container(unique_name).get_blob_client("results.json")
    first = blob.upload_blob(b"first", overwrite=True, match_condition=MatchConditions.IfMissing)["etag"]
    with pytest.raises(Exception) as exists:  # If-None-Match: * on a blob that exists
        blob.upload_blob(b"second", overwrite=True, match_condition=MatchConditions.IfMissing)
    assert condition_failed(exists.value), repr(exists.value)
    second = blob.upload_blob(b"second", overwrite=True, etag=first, match_condition=MatchConditions.IfNotModified)
    with pytest.raises(Exception) as modified:  # If-Match with the ETag the blob had before
        blob.upload_blob(b"stale", overwrite=True, etag=first, match_condition=MatchConditions.IfNotModified)
    assert condition_failed(modified.value), repr(modified.value)
    download = blob.download_blob()
    assert download.readall() == b"second" and download.properties.etag == second["etag"]


def test_a_blob_sink_replaces_only_what_it_read_or_wrote(storage_connection: str, unique_name: str) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    container = service.create_container(unique_name).container_name
    winner, loser = BlobSink(service, container, "r.json"), BlobSink(service, container, "r.json")
    assert winner.read() is None and loser.read() is None  # both found no results: each may only create them
    assert winner.write(b"winner 1")
    with pytest.raises(OutputTaken, match="replaced by another run"):
        loser.write(b"loser 1")  # If-None-Match: * refused
    etag = winner.write(b"winner 2")  # the winner goes on from its own ETag
    with pytest.raises(OutputTaken):
        loser.write(b"loser 2")  # and the loser stays stopped
    late = BlobSink(service, container, "r.json")
    assert late.read() == b"winner 2"
    assert winner.write(b"winner 3") != etag
    with pytest.raises(OutputTaken):
        late.write(b"late")  # If-Match with the ETag it read refused
    assert service.get_blob_client(container, "r.json").download_blob().readall() == b"winner 3"


def test_a_blob_sink_keeps_its_own_write_whose_answer_was_lost(storage_connection: str, unique_name: str) -> None:
    """azure-core retries a Put Blob whose answer was lost; when the first try had landed, the retry's If-Match names
    the ETag that try replaced and fails. The blob holds this run's own bytes: no other run took it."""
    service = BlobServiceClient.from_connection_string(storage_connection)
    container = service.create_container(unique_name).container_name
    sink = BlobSink(service, container, "r.json")
    assert sink.read() is None
    sink.write(b"one")
    real: Callable[..., Any] = sink.client.upload_blob

    def landed_then_retried(data: bytes, **kwargs: Any) -> Any:
        real(data, **kwargs)  # the first try lands, its answer is lost ...
        return real(data, **kwargs)  # ... and the retry's condition fails

    sink.client.upload_blob = landed_then_retried  # type: ignore[method-assign]
    etag = sink.write(b"two")
    props = service.get_blob_client(container, "r.json").get_blob_properties()
    assert etag == str(props.etag).strip('"')
    sink.client.upload_blob = real  # type: ignore[method-assign]
    sink.write(b"three")  # conditional on the ETag it adopted
    assert service.get_blob_client(container, "r.json").download_blob().readall() == b"three"


def test_a_file_sink_replaces_only_what_it_read_or_wrote(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    winner, loser = FileSink(path), FileSink(path)
    assert winner.read() is None and loser.read() is None
    winner.write(b"winner 1")
    with pytest.raises(OutputTaken, match="replaced by another run"):
        loser.write(b"loser 1")
    winner.write(b"winner 2")
    late = FileSink(path)
    assert late.read() == b"winner 2"
    winner.write(b"winner 3")
    with pytest.raises(OutputTaken):
        late.write(b"late")
    with pytest.raises(OutputTaken):
        loser.write(b"loser 2")
    assert path.read_bytes() == b"winner 3" and sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
    unread = FileSink(path)  # a sink never read writes as before (tests, tools)
    unread.write(b"any")
    assert path.read_bytes() == b"any"
