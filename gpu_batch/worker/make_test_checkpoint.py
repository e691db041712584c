"""Build a small, real YOLOv5 network with random weights, pickled exactly like a MegaDetector v5 checkpoint.

Why this module exists: real MDv5 weights (280 MB) cannot be downloaded in CI or the offline demo, but every code
path the worker has for them (unpickling ``models.yolo.Model``, fusing, letterboxing at 1280/stride 64, NMS,
output format) can be exercised with the same architecture family at random weights. The file written here is a
``torch.save`` of ``{'model': <models.yolo.Model in fp16>, 'epoch': -1, 'optimizer': None, ...}``, the layout
YOLOv5's ``strip_optimizer`` gives the released MegaDetector files, and the pickle names ``models.yolo.Model``,
``models.yolo.Detect`` and ``models.common.*`` just as they do, so MegaDetector's own loader (with the ``yolov5``
package) reads it too. The oracle test relies on that.

The objectness bias is calibrated so that a typical photo-like image gets a handful of detections above 0.05:
random weights otherwise give either nothing or thousands of boxes.

Usage: ``python -m gpu_batch.worker.make_test_checkpoint OUT.pt [--arch yolov5n] [--seed 0]``.
It must not be used to produce anything but test fixtures: the detections it yields are meaningless.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import types
import zipfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from gpu_batch.worker import yolov5_modules as y5

MD_CLASS_NAMES = ["animal", "person", "vehicle"]
_PICKLE_LOCK = threading.Lock()
_GAIN = 1.4


@contextlib.contextmanager
def pickled_as_yolov5() -> Iterator[None]:
    """While active, our YOLOv5 classes pickle under YOLOv5's module names (``models.yolo.Model``, ...).

    Pickle writes a class as ``<cls.__module__> <cls.__qualname__>`` and checks that the name resolves back to the
    same object, so for the duration of the save we point ``__module__`` at stand-in modules registered in
    ``sys.modules`` and put everything back afterwards.
    """
    with _PICKLE_LOCK:
        saved_modules = {name: sys.modules.get(name) for name in ("models", y5.PICKLE_MODULE_YOLO,
                                                                    y5.PICKLE_MODULE_COMMON)}
        saved_names: dict[type, str] = {}
        package = types.ModuleType("models")
        package.__path__ = []
        stand_ins = {y5.PICKLE_MODULE_YOLO: types.ModuleType(y5.PICKLE_MODULE_YOLO),
                     y5.PICKLE_MODULE_COMMON: types.ModuleType(y5.PICKLE_MODULE_COMMON)}
        try:
            sys.modules["models"] = package
            for name, module in stand_ins.items():
                sys.modules[name] = module
                setattr(package, name.split(".")[1], module)
            for (module_name, class_name), cls in y5.PICKLED_CLASSES.items():
                if cls.__name__ != class_name:  # alias (DetectionModel): pickle the class under its real name
                    continue
                saved_names.setdefault(cls, cls.__module__)
                cls.__module__ = module_name
                setattr(stand_ins[module_name], class_name, cls)
            yield
        finally:
            for cls, module_name in saved_names.items():
                cls.__module__ = module_name
            for name, previous in saved_modules.items():
                if previous is None:
                    sys.modules.pop(name, None)
                else:
                    sys.modules[name] = previous


def _calibration_images(n: int = 3, seed: int = 1234) -> list[np.ndarray]:
    """Letterbox-sized, smoothly textured RGB images (HWC uint8) to calibrate the objectness bias on."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
        big = np.kron(small, np.ones((80, 80, 1), dtype=np.uint8))  # 960 x 1280 blocks
        noise = rng.integers(-20, 21, size=big.shape)
        images.append(np.clip(big.astype(np.int16) + noise, 0, 255).astype(np.uint8))
    return images


def _normalize_head(model: y5.Model) -> None:
    """Rescale each Detect output channel to a fixed spread over the calibration images.

    Random deep networks give head outputs whose scale is arbitrary (vanishing or exploding), which would make every
    anchor score alike or every one saturate. Box channels get std 1, objectness and class logits std 1.5, all
    centred on 0, so scores depend on the image content and boxes have sane sizes.
    """
    detect = model.model[-1]
    assert isinstance(detect, y5.Detect)
    feats: dict[int, list[torch.Tensor]] = {i: [] for i in range(detect.nl)}
    hooks = [conv.register_forward_hook(lambda _m, inp, _out, i=i: feats[i].append(inp[0].detach()))
             for i, conv in enumerate(detect.m)]
    model.eval()
    with torch.no_grad():
        for image in _calibration_images():
            model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)
    for h in hooks:
        h.remove()
    target = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.5] + [1.5] * detect.nc)
    with torch.no_grad():
        for i, conv in enumerate(detect.m):
            x = torch.cat(feats[i])
            out = torch.nn.functional.conv2d(x, conv.weight)  # (n, na*no, h, w), no bias
            mean = out.mean(dim=(0, 2, 3))
            std = out.std(dim=(0, 2, 3)).clamp_min(1e-12)
            scale = target.repeat(detect.na) / std
            conv.weight.mul_(scale.view(-1, 1, 1, 1))
            conv.bias.copy_(-mean * scale)


def _calibrate_objectness(model: y5.Model, target_per_image: float, threshold: float) -> None:
    """Set the objectness bias so that about ``target_per_image`` anchors per image score above ``threshold``."""
    detect = model.model[-1]
    assert isinstance(detect, y5.Detect)
    _normalize_head(model)
    raw_obj: list[torch.Tensor] = []
    cls_prob: list[torch.Tensor] = []
    with torch.no_grad():
        for image in _calibration_images():
            x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0
            out = model(x)[0][0]  # (anchors, 5 + nc) after sigmoid
            obj = out[:, 4].double().clamp(1e-12, 1 - 1e-12)
            raw_obj.append(torch.log(obj / (1 - obj)))
            cls_prob.append(out[:, 5:].max(1).values.double())

    def count(bias: float) -> float:
        return float(np.mean([((torch.sigmoid(o + bias) * c) > threshold).sum().item()
                              for o, c in zip(raw_obj, cls_prob)]))

    lo, hi = -40.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if count(mid) > target_per_image:
            hi = mid
        else:
            lo = mid
    with torch.no_grad():
        for conv in detect.m:
            conv.bias.view(detect.na, -1)[:, 4] += lo


def build_test_model(arch: str = "yolov5n", seed: int = 0, target_per_image: float = 40.0,
                     threshold: float = 0.05) -> y5.Model:
    """A random-weight YOLOv5 ``Model`` with MegaDetector's three classes, in fp32 eval mode."""
    torch.manual_seed(seed)
    model = y5.Model(y5.model_config(arch, nc=len(MD_CLASS_NAMES)))
    # Random BatchNorm statistics and affine terms, so that fusing (which MegaDetector does) is really exercised
    # and activations keep a useful spread through the depth of the network.
    gen = torch.Generator().manual_seed(seed + 1)
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            # Variance-preserving (He) init: PyTorch's default shrinks activations layer by layer, which would make
            # the output nearly independent of the image.
            fan_in = module.weight[0].numel()
            module.weight.data.copy_(torch.randn(module.weight.shape, generator=gen) * (_GAIN / fan_in ** 0.5))
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) * 0.5 + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    model.names = list(MD_CLASS_NAMES)
    _calibrate_objectness(model, target_per_image=target_per_image, threshold=threshold)
    return model.eval()


def write_test_checkpoint(path: str | Path, arch: str = "yolov5n", seed: int = 0,
                          metadata: dict[str, Any] | None = None) -> Path:
    """Write a MegaDetector-style checkpoint of a random-weight ``arch`` network to ``path`` and return the path.

    The file holds ``{'model': <fp16 models.yolo.Model>, ...}`` exactly as released MDv5 files do; load it with
    ``gpu_batch.worker.loader.load_model`` (or MegaDetector's ``PTDetector``). ``metadata`` is stored as
    ``megadetector_info.json`` inside the archive, as MDv1000 files carry it (e.g. ``{"image_size": 640}``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cached = cache_path(arch, seed, metadata)
    if cached is not None and cached.is_file():
        return _copy_into(cached, path)
    _build(path, arch, seed, metadata)
    if cached is not None:
        with contextlib.suppress(OSError):  # a cache that cannot be written costs the next build, nothing else
            cached.parent.mkdir(parents=True, exist_ok=True)
            _copy_into(path, cached)
    return path


CACHE_ENV = "TRAPBATCH_TEST_CHECKPOINT_CACHE"


def cache_path(arch: str, seed: int, metadata: dict[str, Any] | None) -> Path | None:
    """Where a checkpoint built from these arguments is kept for the next call, or None (``TRAPBATCH_TEST_CHECKPOINT_
    CACHE=off``). Why: building one calibrates the head with six forward passes at 1280 px on the CPU (10-20 s a
    checkpoint), and the test suite, the demo and the benchmarks build the same few a dozen times over.

    The folder: ``$TRAPBATCH_TEST_CHECKPOINT_CACHE``, else ``$XDG_CACHE_HOME/trapbatch/test-checkpoints`` (``~/.cache``
    when unset). The name is a digest of everything the file's bytes follow from: the arguments, this module's and
    ``yolov5_modules``' source and the torch version, so a change to any of them builds afresh."""
    import hashlib
    import os

    folder = os.environ.get(CACHE_ENV, "")
    if folder.lower() in ("off", "0", "no"):
        return None
    if not folder:
        cache_home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        folder = str(cache_home / "trapbatch" / "test-checkpoints")
    digest = hashlib.sha256(json.dumps([arch, seed, metadata, torch.__version__], sort_keys=True).encode())
    for module in (__file__, y5.__file__):
        digest.update(Path(module).read_bytes())
    return Path(folder) / f"{arch}-{seed}-{digest.hexdigest()[:16]}.pt"


def _copy_into(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` through a temporary name beside it, so a reader never sees half a file."""
    import os
    import shutil

    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target


def _build(path: Path, arch: str, seed: int, metadata: dict[str, Any] | None) -> None:
    model = build_test_model(arch=arch, seed=seed)
    checkpoint = {
        "epoch": -1,
        "best_fitness": None,
        "model": model.half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "wandb_id": None,
        "date": None,
        "trapbatch_test_checkpoint": {"arch": arch, "seed": seed},
    }
    tmp = path.with_name(path.name + ".tmp")
    with pickled_as_yolov5():
        torch.save(checkpoint, tmp)
    if metadata is not None:
        with zipfile.ZipFile(tmp, "a") as archive:
            root = archive.namelist()[0].split("/")[0]
            archive.writestr(f"{root}/megadetector_info.json", json.dumps(metadata))
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpu_batch.worker.make_test_checkpoint",
                                     description="Write a random-weight MegaDetector-style YOLOv5 checkpoint "
                                                 "(test fixture only: its detections are meaningless).")
    parser.add_argument("out", help="output .pt path")
    parser.add_argument("--arch", default="yolov5n", help="yolov5n|s|m|l|x, or with a 6 suffix for the P6 "
                                                          "(stride 64) family MDv5 uses, e.g. yolov5x6")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        out = write_test_checkpoint(args.out, arch=args.arch, seed=args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
