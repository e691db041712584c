"""Model references and checkpoint loading for the GPU worker.

Why this module exists: a shard manifest names its model as a known MegaDetector version (``MDV5A``, ``MDV5B``),
a local path, or ``blob://<container>/<name>``. This module turns that into a local file (downloading into the
model cache, checking the published hash) and unpickles it into an eval-mode, BatchNorm-fused network.

How checkpoints are unpickled: MDv5 files are pickled YOLOv5 ``models.yolo.Model`` objects. We do **not** import the
``yolov5``/``ultralytics`` packages; a custom ``Unpickler.find_class`` maps ``models.yolo.*``/``models.common.*``
(and the ``yolov5.models.*`` spelling) onto our own torch-only re-implementation in ``yolov5_modules.py``. Any other
non-torch class in the pickle is refused with a message naming it.

Security: ``torch.load(weights_only=False)`` executes pickle opcodes. Only load checkpoints you trust (the published
MegaDetector releases, or files you built). The class allow-list above narrows, but does not remove, that risk.

Model support, given the packages available to the worker:
  * MDv5a / MDv5b (v5a.0.0/0.1, v5b.0.0/0.1, YOLOv5x6): supported.
  * MDv1000-redwood and -spruce (``MDV1000-REDWOOD``, ``MDV1000-SPRUCE``) are YOLOv5-family networks; they load if
    pickled with the classes above (untested on the real files: their weights cannot be downloaded here). Like
    MegaDetector, the input size comes from the ``megadetector_info.json`` that v1000 files carry inside the archive
    (1280 when absent, as for MDv5), and the letterbox stride is 64 at 1280 pixels, else 32.
  * MDv1000-cedar (YOLOv9, needs ``yolov9pip``) and -larch/-sorrel (YOLO11 via the AGPL ``ultralytics`` package,
    anchor-free output) are NOT supported: naming one fails at once, before any download, and any other file
    holding their classes fails with ``ModelLoadError`` naming the missing class.

Must not: run inference, or touch image data.
"""
from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
import tempfile
import types
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from gpu_batch.worker import yolov5_modules as y5
from gpu_batch.worker.caches import model_cache_dir

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model named by the manifest cannot be resolved or loaded (whole-shard problem, exit code 3)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message}. {hint}".strip() if hint else message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A published MegaDetector release: where to get it and the hash its publisher lists."""

    version: str
    url: str
    hash_algorithm: str
    hash_hex: str
    image_size: int = 1280


# URLs and md5 sums as published in MegaDetector's run_detector.known_models (megadetector 10.0.28); the upstream
# table lists md5, not sha256, so md5 is what we can verify against. 'MDV5A' means v5a.0.1, as in MegaDetector.
KNOWN_MODELS: Mapping[str, KnownModel] = {
    "v5a.0.0": KnownModel("v5a.0.0", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5a.0.0.pt",
                          "md5", "ec1d7603ec8cf642d6e0cd008ba2be8c"),
    "v5b.0.0": KnownModel("v5b.0.0", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5b.0.0.pt",
                          "md5", "bc235e73f53c5c95e66ea0d1b2cbf542"),
    "v5a.0.1": KnownModel("v5a.0.1", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5a.0.1.pt",
                          "md5", "60f8e7ec1308554df258ed1f4040bc4f"),
    "v5b.0.1": KnownModel("v5b.0.1", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5b.0.1.pt",
                          "md5", "f17ed6fedfac2e403606a08c89984905"),
    "v1000.0.0-redwood": KnownModel(
        "v1000.0.0-redwood", "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/"
        "md_v1000.0.0-redwood.pt", "md5", "74474b3aec9cf1a990da38b37ddf9197"),
    "v1000.0.0-spruce": KnownModel(
        "v1000.0.0-spruce", "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/"
        "md_v1000.0.0-spruce.pt", "md5", "1c9d1d2b3ba54931881471fdd508e6f2"),
}
MODEL_ALIASES: Mapping[str, str] = {
    "mdv5a": "v5a.0.1", "mdv5b": "v5b.0.1", "v5a.0.0": "v5a.0.0", "v5b.0.0": "v5b.0.0", "v5a.0.1": "v5a.0.1",
    "v5b.0.1": "v5b.0.1",
    **{alias: "v1000.0.0-redwood" for alias in ("mdv1000-redwood", "v1000-redwood", "v1000.0.0-redwood", "redwood")},
    **{alias: "v1000.0.0-spruce" for alias in ("mdv1000-spruce", "v1000-spruce", "v1000.0.0-spruce", "spruce")},
}
# MegaDetector versions whose network family the worker does not implement, and why (refused before downloading).
UNSUPPORTED_MODELS: Mapping[str, str] = {
    **{alias: "MDv1000-cedar is a YOLOv9 network (MegaDetector runs it through the yolov9pip package)"
       for alias in ("mdv1000-cedar", "v1000-cedar", "v1000.0.0-cedar", "cedar")},
    **{alias: "MDv1000-larch is a YOLO11 network (anchor-free; MegaDetector runs it through the AGPL ultralytics "
              "package)" for alias in ("mdv1000-larch", "v1000-larch", "v1000.0.0-larch", "larch")},
    **{alias: "MDv1000-sorrel is a YOLO11 network (anchor-free; MegaDetector runs it through the AGPL ultralytics "
              "package)" for alias in ("mdv1000-sorrel", "v1000-sorrel", "v1000.0.0-sorrel", "sorrel")},
}
METADATA_NAME = "megadetector_info.json"  # inside the checkpoint's zip archive, in its one top-level folder
BLOB_SCHEME = "blob://"


def known_model(ref: str) -> KnownModel | None:
    version = MODEL_ALIASES.get(ref.strip().lower())
    return KNOWN_MODELS[version] if version else None


def file_hash(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


Downloader = Callable[[str, Path], None]


def _urllib_download(url: str, dest: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, dest.open("wb") as out:  # noqa: S310 (fixed https URLs)
        shutil.copyfileobj(response, out, 1 << 20)


def resolve_model_file(ref: str, cache_dir: Path | None = None, downloader: Downloader | None = None,
                       blob_fetcher: Callable[[str, str, Path], None] | None = None) -> Path:
    """Return a local checkpoint path for ``ref`` (known version, local path or ``blob://container/name``).

    Known versions are downloaded once into ``cache_dir`` and their published hash is checked on every resolve of a
    fresh download; a cached file with a wrong hash is replaced. ``blob_fetcher(container, name, dest)`` downloads a
    blob (the pipeline passes one built from the storage settings).
    """
    cache_dir = model_cache_dir() if cache_dir is None else cache_dir
    unsupported = UNSUPPORTED_MODELS.get(ref.strip().lower())
    if unsupported is not None:
        raise ModelLoadError(f"model {ref!r} is not supported by the trapbatch worker: {unsupported}",
                             hint="use MDV5A, MDV5B, MDV1000-REDWOOD or MDV1000-SPRUCE, or run this model with "
                                  "MegaDetector's own run_detector_batch")
    known = known_model(ref)
    if known is not None:
        dest = cache_dir / Path(known.url).name
        if dest.exists() and file_hash(dest, known.hash_algorithm) == known.hash_hex:
            return dest
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkstemp(dir=cache_dir, suffix=".part")[1])
        try:
            (downloader or _urllib_download)(known.url, tmp)
        except (urllib.error.URLError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise ModelLoadError(
                f"could not download {ref} ({known.version}) from {known.url}: {exc}",
                hint="this machine may be offline; download the file elsewhere and pass its local path as the model "
                     f"(or place it at {dest})") from exc
        actual = file_hash(tmp, known.hash_algorithm)
        if actual != known.hash_hex:
            tmp.unlink(missing_ok=True)
            raise ModelLoadError(f"downloaded {known.url} has {known.hash_algorithm} {actual}, expected "
                                 f"{known.hash_hex}", hint="the download was corrupted or replaced; retry, or pass "
                                                           "a local path to a trusted copy")
        tmp.replace(dest)
        return dest
    if ref.startswith(BLOB_SCHEME):
        container, _, name = ref[len(BLOB_SCHEME):].partition("/")
        if not container or not name:
            raise ModelLoadError(f"model reference {ref!r} is not blob://<container>/<name>")
        if blob_fetcher is None:
            raise ModelLoadError(f"model {ref!r} is in blob storage but no storage is configured",
                                 hint="set TRAPBATCH_STORAGE_CONNECTION or TRAPBATCH_STORAGE_ACCOUNT_URL")
        dest = cache_dir / "blob" / container / name
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".part")
            try:
                blob_fetcher(container, name, tmp)
            except Exception as exc:  # azure errors vary; any failure here means the model is unavailable
                tmp.unlink(missing_ok=True)
                raise ModelLoadError(f"could not download model {ref}: {exc}") from exc
            tmp.replace(dest)
        return dest
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model {ref!r} is neither a known MegaDetector version ({', '.join(sorted(MODEL_ALIASES))}),"
                             " blob://container/name, nor an existing file")
    return path


_TORCH_PREFIXES = ("torch", "collections", "builtins", "__builtin__", "numpy", "_codecs", "copyreg", "argparse", "pathlib")


class _YoloUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        key = (module[len("yolov5."):] if module.startswith("yolov5.") else module, name)
        cls = y5.PICKLED_CLASSES.get(key)
        if cls is not None:
            return cls
        if module.split(".")[0] in _TORCH_PREFIXES:
            return super().find_class(module, name)
        raise ModelLoadError(
            f"checkpoint references {module}.{name}, which the trapbatch worker does not provide",
            hint="only YOLOv5-family MegaDetector checkpoints (MDv5a/MDv5b) are supported")


# torch.load(pickle_module=...) needs a module-like object with Unpickler and load.
_yolo_pickle = types.SimpleNamespace(Unpickler=_YoloUnpickler, load=pickle.load, __name__="trapbatch_yolo_pickle")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """An eval-mode, fused detector on its device, with what preprocessing needs to know about it."""

    network: torch.nn.Module
    device: torch.device
    half: bool
    stride: int
    image_size: int
    source: str


def read_model_metadata(path: str | Path) -> dict[str, Any] | None:
    """The ``megadetector_info.json`` that MDv1000 checkpoints carry inside their archive, or None (MDv5 has none).

    Read as MegaDetector reads it (``pytorch_detector.read_metadata_from_megadetector_model_file``): the file sits in
    the archive's one top-level folder; anything unreadable counts as absent.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            roots = {name.split("/")[0] for name in names}
            if len(roots) != 1:
                return None
            member = f"{next(iter(roots))}/{METADATA_NAME}"
            if member not in names:
                return None
            data = json.loads(archive.read(member).decode("utf-8"))
    except (OSError, zipfile.BadZipFile, ValueError, KeyError):
        return None
    return data if isinstance(data, dict) else None


def load_model(path: str | Path, device: torch.device | str = "cpu", half: bool | None = None,
               channels_last: bool | None = None, image_size: int | None = None) -> LoadedModel:
    """Unpickle a MegaDetector-style checkpoint and prepare it as MegaDetector does (``.float().fuse().eval()``).

    On CUDA the network is then cast to fp16 and channels_last unless told otherwise; on CPU it stays fp32.
    ``image_size`` defaults to the checkpoint's metadata, else 1280, as in MegaDetector.
    Raises ModelLoadError for a missing/corrupt/unsupported file.
    """
    if image_size is None:
        metadata = read_model_metadata(path) or {}
        try:
            image_size = int(metadata.get("image_size", 1280))
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"checkpoint {path} has an unreadable image_size in its {METADATA_NAME}: "
                                 f"{metadata.get('image_size')!r}") from exc
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    half = on_cuda if half is None else half
    channels_last = on_cuda if channels_last is None else channels_last
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=False, pickle_module=_yolo_pickle)
    except ModelLoadError:
        raise
    except Exception as exc:  # corrupt zip, truncated file, wrong format: all mean "cannot load"
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}",
                             hint="check that it is a MegaDetector v5 .pt file and was fully downloaded") from exc
    model = checkpoint.get("ema") or checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, y5.Model):
        raise ModelLoadError(f"checkpoint {path} holds no YOLOv5 model under 'model'")
    for m in model.modules():  # same compatibility fix as MegaDetector's PTDetector._load_model
        if isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
    with torch.no_grad():
        model = model.float().fuse().eval()
    model.requires_grad_(False)
    model.to(device)
    if half:
        model.half()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # MegaDetector letterboxes with stride 64 whenever the image size is 1280, else 32, whatever the network's own
    # stride (PTDetector decides before loading the network); we do the same.
    letterbox_stride = 64 if image_size == 1280 else 32
    return LoadedModel(network=model, device=device, half=half, stride=letterbox_stride, image_size=image_size,
                       source=str(path))


def compile_model(model: LoadedModel) -> LoadedModel:
    """The same model with its forward pass wrapped in ``torch.compile`` (TorchInductor, static shapes).

    Why opt-in: on an H100 the compiled YOLOv5x6 ran 336-340 img/s against 318 eager, but compiling cost 36 s before
    the first batch from a cold cache and 14 s from a warm one (``caches.compile_cache_dir``), so it pays from about 16,000
    images per shard on a warm node only (bench/RESULTS.md). Compilation happens at the first batch of each new shape; after
    ``torch._dynamo.config.cache_size_limit`` shapes it falls back to eager. Numbers differ from eager by float
    rounding only (covered by the oracle tolerances).
    """
    from dataclasses import replace

    compiled: torch.nn.Module = torch.compile(model.network, dynamic=False)  # type: ignore[assignment]
    return replace(model, network=compiled)
