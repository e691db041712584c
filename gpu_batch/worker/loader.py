"""Model references and checkpoint loading for the GPU worker.

Why this module exists: a shard manifest names its model as a known MegaDetector version (``MDV5A``, ``MDV5B``),
a local path, or ``blob://<container>/<name>``. This module turns that into a local file (downloading into the
model cache, checking the published hash) and unpickles it into an eval-mode, BatchNorm-fused network.

How checkpoints are unpickled: MDv5 files are pickled YOLOv5 ``models.yolo.Model`` objects. We do **not** import the
``yolov5``/``ultralytics`` packages, and we do not run pickle's general machinery: ``torch.load(weights_only=True)``
(torch's restricted unpickler, which calls and builds only allow-listed globals and refuses every other opcode that
could reach code) runs with exactly the globals of ``CHECKPOINT_GLOBALS`` added: the YOLOv5 classes under their
pickled names (``models.yolo.*``/``models.common.*``, and the ``yolov5.models.*`` spelling) mapped onto our own
torch-only re-implementation in ``yolov5_modules.py``, the few ``torch.nn`` layers those use, and numpy's array and
scalar reconstructors (YOLOv5 training checkpoints carry a numpy ``best_fitness``); torch itself admits tensors,
storages, their rebuild functions and ``collections.OrderedDict``. Anything else (``os.system``, ``builtins.eval``,
``getattr``, any other class) stops the load before it is called, with a ``ModelLoadError`` naming it.

Security: a crafted checkpoint cannot run code on the GPU nodes this way: nothing outside the allow-list is called,
and nothing on it runs code taken from the file (our YOLOv5 classes build layers from numbers; no ``eval``).
TorchScript archives are refused too (``torch.load`` would hand them to ``torch.jit.load``).

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

import glob
import hashlib
import json
import logging
import pickle
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from gpu_batch.models import (BLOB_SCHEME, KNOWN_MODELS, MODEL_ALIASES, UNSUPPORTED_MODELS,  # noqa: F401
                               KnownModel, known_model, split_blob_model)
from gpu_batch.worker import yolov5_modules as y5
from gpu_batch.worker.caches import model_cache_dir

logger = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """The model named by the manifest cannot be resolved or loaded (whole-shard problem, exit code 3)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(f"{message}. {hint}".strip() if hint else message)
        self.hint = hint


METADATA_NAME = "megadetector_info.json"  # inside the checkpoint's zip archive, in its one top-level folder


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


def download_did_not_answer(exc: BaseException) -> bool:
    """Whether a published model's download (``_urllib_download``) failed for a cause that passes: the resolver did
    not answer (EAI_AGAIN), the connection was reset, the read timed out once the response had begun, or the host
    said "later" (408, 429, 5xx). Not a name DNS says does not exist, nor a connection that timed out or was refused
    before any answer: that is what a node without outbound internet meets on every try (on Azure the name still
    resolves), and the loader's advice (place the file, or a ``blob://`` model) is what fixes it; nor any other 4xx
    (a 404: the file moved).

    Why: urllib wraps what fails before the response in ``URLError`` (its ``reason`` the socket error) and an HTTP
    error status in ``HTTPError``, which the worker's exit-69 rule (``storage_refs.service_did_not_answer``, written
    for the storage SDK's exceptions) did not count: the publisher's host answering 503 or its resolver down for a few
    minutes at a new node's first shard exited 3 (unfixable), and the second such attempt failed the whole task. Why
    not every connect failure: exit 69 is tried for an hour from a shard's first (``orchestrations.shards``
    "Unavailable exits") and then ``max_attempts`` times, for every shard, minutes each here, so a pool without
    internet would spend hours of node time before the task failed, where exit 3 fails it at a shard's second attempt
    with the advice."""
    import socket

    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code in (408, 429)
    # before any response: a resolver that did not answer, or a connection reset/aborted, passes. A reset (a
    # firewall denying HTTPS may answer so on every try) fails in moments, so its extra attempts cost seconds, not
    # the connect timeout's minutes
    if isinstance(exc, urllib.error.URLError):
        reason = exc.reason
        if isinstance(reason, socket.gaierror):
            return reason.errno not in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
        return isinstance(reason, ConnectionError) and not isinstance(reason, ConnectionRefusedError)
    return isinstance(exc, (TimeoutError, ConnectionError))  # raised bare while the response was read


# A known model's download is tried this many times, waiting DOWNLOAD_WAIT_S, twice that...: each new node downloads
# MDV5A's 280 MB from GitHub on its first shard, and one cut connection otherwise cost the shard an attempt
DOWNLOAD_ATTEMPTS = 3
DOWNLOAD_WAIT_S = 5.0


def resolve_model_file(ref: str, cache_dir: Path | None = None, downloader: Downloader | None = None,
                       blob_fetcher: Callable[[str, str, Path], None] | None = None,
                       sleep: Callable[[float], None] = time.sleep,
                       blob_version: Callable[[str, str], str] | None = None) -> Path:
    """Return a local checkpoint path for ``ref`` (known version, local path or ``blob://container/name``).

    Known versions are downloaded once into ``cache_dir`` and their published hash is checked on every resolve of a
    fresh download; a cached file with a wrong hash is replaced. ``blob_fetcher(container, name, dest)`` downloads a
    blob (the pipeline passes one built from the storage settings); ``blob_version(container, name)`` gives the
    blob's ETag now, and a cached copy of another version is downloaded again (``_cached_blob_is_current``).
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
        for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
            tmp = Path(tempfile.mkstemp(dir=cache_dir, suffix=".part")[1])
            try:
                (downloader or _urllib_download)(known.url, tmp)
                actual = file_hash(tmp, known.hash_algorithm)
            except (urllib.error.URLError, OSError) as exc:
                tmp.unlink(missing_ok=True)
                if attempt < DOWNLOAD_ATTEMPTS:
                    logger.warning("download of %s failed (%s); trying again", known.url, exc)
                    sleep(DOWNLOAD_WAIT_S * 2 ** (attempt - 1))
                    continue
                # what to do before the service's words: the task's status keeps an error's first 500 characters
                # (core.errors.failure_line), and with the URL and the node's cache path the advice's end was cut
                raise ModelLoadError(
                    f"could not download {ref} ({known.version}) from {known.url}",
                    hint=f"this machine may be offline: put that file at {dest} on each node (its published hash "
                         "is checked), or upload it to the models container (TRAPBATCH_MODELS_CONTAINER) and request "
                         f"blob://<that container>/<name>; {DOWNLOAD_ATTEMPTS} tries failed: {exc}; running the "
                         "worker by hand, --model takes a local path") from exc
            if actual == known.hash_hex:
                tmp.replace(dest)
                return dest
            tmp.unlink(missing_ok=True)
            if attempt < DOWNLOAD_ATTEMPTS:  # cut short without an error, or garbled on the way: once more
                logger.warning("download of %s has %s %s, expected %s; trying again", known.url,
                               known.hash_algorithm, actual, known.hash_hex)
                continue
            raise ModelLoadError(f"downloaded {known.url} has {known.hash_algorithm} {actual}, expected "
                                 f"{known.hash_hex} ({DOWNLOAD_ATTEMPTS} tries)",
                                 hint="the file was replaced or every download was corrupted; put a trusted copy at "
                                      f"{dest} (or in the models container)")
    if ref.startswith(BLOB_SCHEME):
        blob = split_blob_model(ref)
        if blob is None:
            raise ModelLoadError(f"model reference {ref!r} is not blob://<container>/<name> with a plain blob name",
                                 hint="no '.' or '..' folders, empty folders or backslashes")
        container, name = blob
        if blob_fetcher is None:
            raise ModelLoadError(f"model {ref!r} is in blob storage but no storage is configured",
                                 hint="set TRAPBATCH_STORAGE_CONNECTION or TRAPBATCH_STORAGE_ACCOUNT_URL")
        dest = cache_dir / "blob" / container / name
        if not dest.resolve().is_relative_to((cache_dir / "blob").resolve()):  # a symlinked folder in the cache
            raise ModelLoadError(f"model {ref!r} would be cached outside {cache_dir / 'blob'}")
        return _cached_blob_model(ref, dest, lambda: _blob_version_or_none(blob_version, container, name),
                                  lambda tmp: blob_fetcher(container, name, tmp))
    path = Path(ref).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"model {ref!r} is neither a known MegaDetector version ({', '.join(sorted(MODEL_ALIASES))}),"
                             " blob://container/name, nor an existing file")
    return path


def _blob_version_or_none(blob_version: Callable[[str, str], str] | None, container: str, name: str) -> str | None:
    """The model blob's ETag now; None when it cannot be asked (no reader given, storage unreachable: the cached copy,
    if any, is used, as before versions were checked)."""
    if blob_version is None:
        return None
    try:
        return str(blob_version(container, name)).strip('"') or None
    except Exception as exc:  # noqa: BLE001 - azure errors vary; a cached copy still serves
        logger.warning("could not read the version of model blob %s/%s (%s); a cached copy is used if there is one",
                       container, name, exc)
        return None


KEPT_BLOB_VERSIONS = 3  # cached versions of one blob:// model kept on a node (the newest); older ones are deleted


def _cached_blob_model(ref: str, dest: Path, version_now: Callable[[], str | None],
                       fetch: Callable[[Path], None]) -> Path:
    """The node's copy of a ``blob://`` model at its blob's version now: ``<name>@<ETag>`` beside where the copy of
    an unknown version goes (``dest``), downloaded when missing.

    Why per version: the cache lives as long as the node, and a model blob overwritten with new weights under the
    same name was never downloaded again, so nodes that had it kept the old weights (a resident server kept them
    loaded) beside new nodes running the new ones, in one task. A file per version cannot name weights it does not
    hold: the download counts as that version only if the blob's ETag is the same after it as before (the storage
    client reads all of a download's ranges from one version). Storage unreachable: the newest cached copy serves.
    """
    version = version_now()
    if version is None:
        cached = _newest_copy(dest)
        if cached is not None:
            return cached
    for _attempt in range(DOWNLOAD_ATTEMPTS):
        path = dest if version is None else _versioned(dest, version)
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        # a file of its own: two workers starting together on a node (the local pool's slots, a resident server
        # and a fallback process) wrote one "<name>.part" at once, and the file they renamed was corrupt
        tmp = Path(tempfile.mkstemp(dir=path.parent, prefix=dest.name + ".", suffix=".part")[1])
        try:
            fetch(tmp)
        except Exception as exc:  # azure errors vary; any failure here means the model is unavailable
            tmp.unlink(missing_ok=True)
            raise ModelLoadError(f"could not download model {ref}: {exc}") from exc
        after = version_now() if version is not None else None
        if after is None or after == version:  # unchanged meanwhile (or no longer askable: as it was just now)
            tmp.replace(path)
            _drop_old_versions(dest)
            return path
        tmp.unlink(missing_ok=True)  # overwritten while it downloaded: the bytes may be either version's
        version = after
    raise ModelLoadError(f"model {ref} was overwritten during each of {DOWNLOAD_ATTEMPTS} downloads",
                         hint="upload new weights under a new name (results name the model, not its version)")


def _versioned(dest: Path, version: str) -> Path:
    return dest.with_name(f"{dest.name}@{re.sub(r'[^A-Za-z0-9]', '', version)}")


def _cached_copies(dest: Path) -> list[Path]:
    found = [p for p in dest.parent.glob(glob.escape(dest.name) + "@*") if not p.name.endswith(".part")]
    return found + ([dest] if dest.exists() else [])


def _copies_newest_first(dest: Path) -> list[Path]:
    dated = []
    for path in _cached_copies(dest):
        try:
            dated.append((path.stat().st_mtime, path))
        except OSError:  # deleted meanwhile by another worker
            continue
    return [path for _, path in sorted(dated, reverse=True)]


def _newest_copy(dest: Path) -> Path | None:
    return next(iter(_copies_newest_first(dest)), None)


def _drop_old_versions(dest: Path) -> None:
    """Keep the newest ``KEPT_BLOB_VERSIONS`` copies (a worker may still be loading an older one it just chose)."""
    for path in _copies_newest_first(dest)[KEPT_BLOB_VERSIONS:]:
        path.unlink(missing_ok=True)


# The torch.nn layers our YOLOv5 modules are built from (yolov5_modules.py), plus the activations earlier YOLOv5
# releases put in Conv (LeakyReLU, Hardswish): pickled under their torch module paths.
_TORCH_LAYERS: tuple[type[torch.nn.Module], ...] = (
    torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.SiLU, torch.nn.LeakyReLU, torch.nn.Hardswish, torch.nn.Identity,
    torch.nn.MaxPool2d, torch.nn.Upsample, torch.nn.Sequential, torch.nn.ModuleList)


SafeGlobal = Callable[..., Any] | tuple[Callable[..., Any], str]


def _numpy_globals() -> list[SafeGlobal]:
    """numpy's array and scalar reconstructors under both module spellings (numpy 1 wrote ``numpy.core``), and its
    dtype classes (an unpickled dtype is built as an instance of one)."""
    import importlib

    import numpy as np

    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1
        multiarray = importlib.import_module("numpy.core.multiarray")
    found: list[SafeGlobal] = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype")]
    found += [(getattr(np.dtypes, name), f"numpy.dtypes.{name}") for name in np.dtypes.__all__]
    for package in ("numpy.core", "numpy._core"):
        found += [(multiarray._reconstruct, f"{package}.multiarray._reconstruct"),
                  (multiarray.scalar, f"{package}.multiarray.scalar")]
    return found


def checkpoint_globals() -> list[SafeGlobal]:
    """Every global a checkpoint may name beyond torch's own weights-only set, as (object, name in the pickle)."""
    found: list[SafeGlobal] = []
    for (module, name), cls in y5.PICKLED_CLASSES.items():
        found += [(cls, f"{module}.{name}"), (cls, f"yolov5.{module}.{name}")]
    found += [(cls, f"{cls.__module__}.{cls.__qualname__}") for cls in _TORCH_LAYERS]
    return found + _numpy_globals()


_GLOBAL_RE = re.compile(r"GLOBAL ([\w.]+)")
_DETAIL_RE = re.compile(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\s*\n|Check the documentation|$)", re.S)


def read_checkpoint(path: str | Path) -> Any:
    """Unpickle a checkpoint file with torch's weights-only unpickler and ``checkpoint_globals`` allowed.

    Raises ModelLoadError for a file that names anything else (before it is called), and for a missing, corrupt or
    non-checkpoint file.
    """
    try:
        with torch.serialization.safe_globals(checkpoint_globals()):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _GLOBAL_RE.search(str(exc))
        if refused is not None:
            raise ModelLoadError(
                f"checkpoint {path} references {refused.group(1)}, which the trapbatch worker does not provide: only "
                "the YOLOv5 and torch classes of MegaDetector checkpoints are unpickled (anything else could run "
                "code), so it was not loaded",
                hint="only YOLOv5-family MegaDetector checkpoints (MDv5a/MDv5b) are supported") from None
        detail = _DETAIL_RE.search(str(exc))
        reason = detail.group(1) if detail is not None else (str(exc) or type(exc).__name__)
        raise ModelLoadError(f"checkpoint {path} is not a plain MegaDetector checkpoint and was not loaded: {reason}",
                             hint="only YOLOv5-family MegaDetector checkpoints (MDv5a/MDv5b) are supported") from None
    except Exception as exc:  # corrupt zip, truncated file, wrong format: all mean "cannot load"
        raise ModelLoadError(f"cannot read checkpoint {path}: {exc}",
                             hint="check that it is a MegaDetector v5 .pt file and was fully downloaded") from exc


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
    checkpoint = read_checkpoint(path)
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

    Why opt-in: traced as one graph on an H200 (2026-12-04) the compiled YOLOv5x6 ran 326 img/s in steady state against
    281 eager, but its first batch came 26 s after the start with a warm cache (``caches.compile_cache_dir``) and 49 s
    with a cold one, against 11 s eager, so in a fresh process it pays from about 30,000 images (bench/RESULTS.md); a
    resident worker keeps the compiled model between shards. Compilation happens at the first batch of each new shape; after
    ``torch._dynamo.config.cache_size_limit`` shapes it falls back to eager. Numbers differ from eager by float
    rounding only (covered by the oracle tolerances).
    """
    from dataclasses import replace

    compiled: torch.nn.Module = torch.compile(model.network, dynamic=False)  # type: ignore[assignment]
    return replace(model, network=compiled)
