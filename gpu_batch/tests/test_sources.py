"""Blob mode end to end against Azurite: manifest, images and a ``blob://`` model from storage, results to storage,
then a resume from the stored partial results."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from gpu_batch import layout
from gpu_batch.manifest import ShardManifest
from gpu_batch.tests.conftest import run_worker_cli, summary_line
from gpu_batch.tests.imagegen import jpeg_bytes, textured
from gpu_batch.worker.sources import BlobImageSource, LocalFolderSource, SourceError


def test_blob_shard_end_to_end_with_resume(storage_connection: str, unique_name: str, checkpoint: Path,
                                           tmp_path: Path) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    images_c, state_c = service.create_container(unique_name + "img"), service.create_container(unique_name + "st")
    names = [f"site A/cam {i}/IMG_{i:04d}.JPG" for i in range(6)] + ["site A/broken.jpg", "site A/absent.jpg"]
    for i, name in enumerate(names[:6]):
        images_c.upload_blob(name, jpeg_bytes(textured(400, 300, 60 + i)))
    images_c.upload_blob("site A/broken.jpg", b"\xff\xd8\xff garbage")
    state_c.upload_blob("models/md_test.pt", checkpoint.read_bytes())
    out_blob = layout.attempt_results_blob("task-b", "s1", 1)
    manifest = ShardManifest(task_id="task-b", shard_id="s1", attempt=1, source_container=images_c.container_name,
                             images=tuple(names), output_container=state_c.container_name, output_blob=out_blob,
                             model=f"blob://{state_c.container_name}/models/md_test.pt")
    state_c.upload_blob(layout.manifest_blob("task-b", "s1", 1), json.dumps(manifest.to_dict()))
    # A previous attempt already did two images (one of them a failure, which must be retried).
    earlier = {"images": [{"file": names[0], "detections": [{"category": "1", "conf": 0.5, "bbox": [0, 0, 1, 1]}]},
                          {"file": names[1], "failure": "image access failure", "detections": None}],
               "detection_categories": {"1": "animal"}, "info": {}}
    state_c.upload_blob(out_blob, json.dumps(earlier))
    env = {"TRAPBATCH_STORAGE_CONNECTION": storage_connection, "TRAPBATCH_MODEL_CACHE": str(tmp_path / "cache")}
    proc = run_worker_cli(["--manifest-container", state_c.container_name, "--manifest-blob",
                           layout.manifest_blob("task-b", "s1", 1), "--device", "cpu", "--workers", "8"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = summary_line(proc)
    assert summary == {**summary, "images": 8, "skipped_resumed": 1, "done": 7, "failed": 2}
    doc = json.loads(state_c.download_blob(out_blob).readall())
    by_file = {e["file"]: e for e in doc["images"]}
    assert set(by_file) == set(names)
    assert by_file[names[0]] == earlier["images"][0]  # resumed entry kept as is
    assert "failure" not in by_file[names[1]]  # retried and now fine
    assert by_file["site A/broken.jpg"]["failure"] == "image access failure"
    assert by_file["site A/absent.jpg"]["failure"] == "image access failure"
    assert (tmp_path / "cache" / "blob" / state_c.container_name / "models" / "md_test.pt").is_file()


def test_blob_source_missing_blob_is_source_error(storage_connection: str, unique_name: str) -> None:
    service = BlobServiceClient.from_connection_string(storage_connection)
    service.create_container(unique_name)
    with pytest.raises(SourceError, match="cannot download"):
        BlobImageSource(service, unique_name).fetch("nope.jpg")


def test_local_source_refuses_paths_outside_root(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    with pytest.raises(SourceError, match="outside the image root"):
        LocalFolderSource(tmp_path / "root").fetch("../secret.jpg")
