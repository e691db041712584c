"""Model references, the cache, hash checks, and unpickling MegaDetector-style checkpoints."""
from __future__ import annotations

import hashlib
import pickle
import urllib.error
import zipfile
from pathlib import Path

import pytest
import torch

from gpu_batch.worker import loader
from gpu_batch.worker.loader import KnownModel, ModelLoadError, load_model, resolve_model_file
from gpu_batch.worker.make_test_checkpoint import MD_CLASS_NAMES
from gpu_batch.worker.yolov5_modules import Detect, Model


def test_test_checkpoint_is_pickled_under_yolov5_names(checkpoint: Path) -> None:
    with zipfile.ZipFile(checkpoint) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    for ref in (b"models.yolo\nModel", b"models.yolo\nDetect", b"models.common\nConv", b"models.common\nC3",
                b"models.common\nSPPF"):
        assert ref in data
    assert b"gpu_batch" not in data  # nothing of ours in the pickle: MegaDetector can read it


def test_load_model_fuses_and_sets_letterbox_stride(checkpoint: Path) -> None:
    m = load_model(checkpoint, device="cpu")
    assert isinstance(m.network, Model) and not m.half and m.stride == 64 and m.image_size == 1280
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in m.network.modules())  # fused like MegaDetector
    assert m.network.names == MD_CLASS_NAMES
    detect = m.network.model[-1]
    assert isinstance(detect, Detect) and detect.nl == 4 and detect.nc == 3
    with torch.inference_mode():
        out = m.network(torch.rand(1, 3, 256, 320))[0]
    assert out.shape[-1] == 8 and out.dtype == torch.float32


class Evil:  # pickled as gpu_batch.tests.test_loader.Evil: not on the allow-list
    pass


def test_unknown_class_in_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path, pickle_module=pickle)
    with pytest.raises(ModelLoadError, match="does not provide"):
        load_model(path)


def test_corrupt_checkpoint_is_model_load_error(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    path.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        load_model(path)


def test_known_model_offline_tells_user_to_pass_a_local_path(tmp_path: Path) -> None:
    def offline(url: str, dest: Path) -> None:
        raise urllib.error.URLError("no route to host")

    with pytest.raises(ModelLoadError) as info:
        resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=offline)
    assert "md_v5a.0.1.pt" in str(info.value) and "pass its local path" in info.value.hint
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_known_model_download_is_hash_checked_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"pretend weights"
    fake = KnownModel("v5a.0.1", "https://example.invalid/md_v5a.0.1.pt", "md5", hashlib.md5(payload).hexdigest())
    monkeypatch.setitem(loader.KNOWN_MODELS, "v5a.0.1", fake)  # type: ignore[arg-type]
    calls = []

    def download(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(payload)

    first = resolve_model_file("mdv5a", cache_dir=tmp_path, downloader=download)
    again = resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=download)
    assert first == again == tmp_path / "md_v5a.0.1.pt" and calls == [fake.url]

    def tampered(url: str, dest: Path) -> None:
        dest.write_bytes(b"something else")

    first.write_bytes(b"corrupted in cache")
    with pytest.raises(ModelLoadError, match="expected"):
        resolve_model_file("MDV5A", cache_dir=tmp_path, downloader=tampered)


def test_local_path_and_bad_refs(tmp_path: Path, checkpoint: Path) -> None:
    assert resolve_model_file(str(checkpoint), cache_dir=tmp_path) == checkpoint
    with pytest.raises(ModelLoadError, match="neither a known MegaDetector version"):
        resolve_model_file(str(tmp_path / "missing.pt"), cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no storage is configured"):
        resolve_model_file("blob://models/x.pt", cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="not blob://"):
        resolve_model_file("blob://justcontainer", cache_dir=tmp_path, blob_fetcher=lambda c, n, d: None)


def test_model_cache_dir_from_env(tmp_path: Path) -> None:
    assert loader.model_cache_dir({"TRAPBATCH_MODEL_CACHE": str(tmp_path)}) == tmp_path
    assert loader.model_cache_dir({}).parts[-3:] == (".cache", "trapbatch", "models")
