"""The YOLOv5 network classes that MegaDetector v5 checkpoints are pickled with, re-implemented torch-only.

Why this module exists: MDv5a/MDv5b (and our test checkpoints) are *pickled* ``models.yolo.Model`` objects whose
sub-modules are ``models.common.Conv``/``C3``/``SPPF``/... from the YOLOv5 repository. Unpickling them needs classes
with those attribute layouts and ``forward`` methods. Rather than importing the ``yolov5`` pip package (which drags in
ultralytics, pandas, matplotlib, seaborn and ``pkg_resources`` at import time, and puts a top-level ``models`` package
on ``sys.path``), the loader maps those pickled names onto the classes below through a custom ``find_class``
(see ``loader.py``). The forward passes follow YOLOv5 release 7.0 line for line, so the numbers are the same.

What it must not do: read files, download, or know about MegaDetector categories. It only defines modules.

Compatibility notes (from YOLOv5's own ``attempt_load``): checkpoints written by YOLOv5 v5/v6 lack ``Detect.dynamic``
and may hold ``anchor_grid`` as a buffer instead of a list; ``Detect.forward`` below rebuilds grids from
``anchors * stride`` and never relies on those attributes.
"""
from __future__ import annotations

import math
from copy import deepcopy
from typing import Any

import torch
from torch import nn

# The module names under which checkpoints refer to these classes when pickled (YOLOv5's repository layout).
PICKLE_MODULE_YOLO = "models.yolo"
PICKLE_MODULE_COMMON = "models.common"


def autopad(k: Any, p: Any = None, d: int = 1) -> Any:
    """'Same' padding for kernel k (YOLOv5's rule)."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def make_divisible(x: float, divisor: int) -> int:
    return int(math.ceil(x / divisor) * divisor)


class FusedConv2d(nn.Conv2d):
    """A ``Conv2d`` whose weight and bias are written right after construction (``fuse_conv_and_bn``), so it skips
    the random initialisation (a third of a second for YOLOv5x6). Why not ``torch.nn.utils.skip_init``: it builds the
    module on the meta device, whose first use imports ``torch.fx.experimental.symbolic_shapes`` and sympy, 0.4-0.7 s
    of every CPU worker's start once torchvision no longer imported them (bench/RESULTS.md, eighth session)."""

    def reset_parameters(self) -> None:
        """No initialisation: the parameters are uninitialised memory until ``fuse_conv_and_bn`` fills them."""


def fuse_conv_and_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Fold a BatchNorm into the preceding convolution, with the values of YOLOv5's ``fuse_conv_and_bn``.

    YOLOv5 multiplies by ``torch.diag(scale)`` with ``torch.mm``: a dense C x C matrix product per layer (about
    10 GFLOP for YOLOv5x6's widest layers, over a second of model start-up on a CPU). Each element of that product is
    one non-zero term plus exact zeros, i.e. ``round(scale[i] * w[i, j])``, which is what the row-wise multiply
    below computes: the same numbers (tested bit for bit against the matrix form), without the matrix.
    """
    fused = FusedConv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True,
                        device=conv.weight.device).requires_grad_(False)
    w_conv = conv.weight.view(conv.out_channels, -1)
    scale = bn.weight.div(torch.sqrt(bn.eps + bn.running_var))
    fused.weight.copy_((w_conv * scale[:, None]).view(fused.weight.shape))
    b_conv = torch.zeros(conv.weight.size(0), device=conv.weight.device) if conv.bias is None else conv.bias
    b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
    fused.bias.copy_(b_conv * scale + b_bn)  # type: ignore[union-attr]
    return fused


class Conv(nn.Module):
    default_act = nn.SiLU()

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Any = None, g: int = 1, d: int = 1,
                 act: Any = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = self.default_act if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if "bn" not in self._modules:  # fused (YOLOv5 swaps in forward_fuse as an instance attribute)
            return self.act(self.conv(x))
        return self.act(self.bn(self.conv(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DWConv(Conv):
    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, d: int = 1, act: Any = True) -> None:
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5) -> None:
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPP(nn.Module):
    def __init__(self, c1: int, c2: int, k: tuple[int, ...] = (5, 9, 13)) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList([nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    def __init__(self, c1: int, c2: int, k: int = 5) -> None:
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # YOLOv5 wraps the pooling in ``warnings.catch_warnings()`` (a torch 1.9 max_pool2d warning). TorchDynamo
        # cannot trace that context manager: it broke ``--compile``'d networks into ~20 graphs recompiled per layer
        # shape until the recompile limit sent most layers back to eager. The numbers are the same without it.
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Focus(nn.Module):
    """Space-to-depth stem used by YOLOv5 before v6.0."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: Any = None, g: int = 1, act: Any = True) -> None:
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)


class Detect(nn.Module):
    stride: Any = None
    dynamic = False
    export = False

    def __init__(self, nc: int = 80, anchors: Any = (), ch: Any = (), inplace: bool = True) -> None:
        super().__init__()
        self.nc = nc
        self.no = nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]
        self.register_buffer("anchors", torch.tensor(anchors).float().view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)
        self.inplace = inplace

    def forward(self, x: list[torch.Tensor]) -> Any:
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                grid, anchor_grid = self._grids(nx, ny, i, x[i])
                xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                xy = (xy * 2 + grid) * self.stride[i]
                wh = (wh * 2) ** 2 * anchor_grid
                y = torch.cat((xy, wh, conf), 4)
                z.append(y.view(bs, self.na * nx * ny, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _grids(self, nx: int, ny: int, i: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Eager: cached per level in a plain dict (not pickled state), keyed by size, device and dtype. Inside
        # torch.compile: made in the graph on every call, never stored, because a tensor a CUDA graph
        # (mode="reduce-overhead") produced is overwritten by its next replay, and a cached one would then be read
        # after (bench/RESULTS.md, 2026-12-04: that mode failed here); the compiler folds the few ops into the graph.
        if torch.compiler.is_compiling():
            return self._make_grid(nx, ny, i, like.device, like.dtype)
        cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = self.__dict__.setdefault("_trapbatch_grids", {})
        key = (i, nx, ny, like.device, like.dtype)
        hit = cache.get(key)
        if hit is None:
            hit = self._make_grid(nx, ny, i, like.device, like.dtype)
            cache[key] = hit
        return hit

    def _make_grid(self, nx: int, ny: int, i: int, device: torch.device, dtype: torch.dtype
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        anchors = self.anchors[i].to(device)
        t = anchors.dtype
        shape = 1, self.na, ny, nx, 2
        yy, xx = torch.arange(ny, device=device, dtype=t), torch.arange(nx, device=device, dtype=t)
        yv, xv = torch.meshgrid(yy, xx, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (anchors * self.stride[i].to(device)).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid.to(dtype), anchor_grid.to(dtype)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_trapbatch_grids", None)
        return state


class Model(nn.Module):
    """YOLOv5's ``DetectionModel`` (pickled as ``models.yolo.Model``)."""

    def __init__(self, cfg: dict[str, Any], ch: int = 3, nc: int | None = None) -> None:
        super().__init__()
        self.yaml = deepcopy(cfg)
        ch = self.yaml["ch"] = self.yaml.get("ch", ch)
        if nc and nc != self.yaml["nc"]:
            self.yaml["nc"] = nc
        self.model, self.save = parse_model(deepcopy(self.yaml), ch=[ch])
        self.names = [str(i) for i in range(self.yaml["nc"])]
        self.inplace = self.yaml.get("inplace", True)
        m = self.model[-1]
        assert isinstance(m, Detect)
        s = 256
        m.inplace = self.inplace
        m.stride = torch.tensor([s / x.shape[-2] for x in self._forward_once(torch.zeros(1, ch, s, s), train=True)])
        m.anchors /= m.stride.view(-1, 1, 1)
        self.stride = m.stride
        self._initialize_biases()
        for mod in self.modules():
            if isinstance(mod, nn.BatchNorm2d):  # YOLOv5's initialize_weights
                mod.eps = 1e-3
                mod.momentum = 0.03

    def forward(self, x: torch.Tensor, augment: bool = False, profile: bool = False, visualize: bool = False) -> Any:
        if augment:
            raise ValueError("test-time augmentation (augment=True) is not offered by the trapbatch worker; "
                             "MegaDetector's default batch path does not use it either")
        return self._forward_once(x)

    def _forward_once(self, x: Any, train: bool = False) -> Any:
        y: list[Any] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
            if train and isinstance(m, Detect):
                was = m.training
                m.train()
                x = m(x)
                m.train(was)
            else:
                x = m(x)
            y.append(x if m.i in self.save else None)
        return x

    def _initialize_biases(self) -> None:
        m = self.model[-1]
        for mi, s in zip(m.m, m.stride):
            b = mi.bias.view(m.na, -1)
            b.data[:, 4] += math.log(8 / (640 / s) ** 2)
            b.data[:, 5:5 + m.nc] += math.log(0.6 / (m.nc - 0.99999))
            mi.bias = torch.nn.Parameter(b.view(-1), requires_grad=True)

    def fuse(self) -> "Model":
        for m in self.model.modules():
            if isinstance(m, Conv) and "bn" in m._modules:
                m.conv = fuse_conv_and_bn(m.conv, m.bn)
                delattr(m, "bn")
        return self


# YOLOv5 >= 7.0 names the class DetectionModel; older checkpoints pickle 'Model'.
DetectionModel = Model


def parse_model(d: dict[str, Any], ch: list[int]) -> tuple[nn.Sequential, list[int]]:
    """Build the layer list from a YOLOv5 model dict (YOLOv5's ``parse_model``, restricted to the blocks above)."""
    names = {"Conv": Conv, "C3": C3, "SPPF": SPPF, "SPP": SPP, "Focus": Focus, "Concat": Concat, "Detect": Detect,
             "Bottleneck": Bottleneck, "DWConv": DWConv, "nn.Upsample": nn.Upsample}
    anchors, nc, gd, gw = d["anchors"], d["nc"], d["depth_multiple"], d["width_multiple"]
    na = (len(anchors[0]) // 2) if isinstance(anchors, list) else anchors
    no = na * (nc + 5)
    layers: list[nn.Module] = []
    save: list[int] = []
    c2 = ch[-1]
    for i, (f, n, m_name, args) in enumerate(d["backbone"] + d["head"]):
        m = names[m_name]
        args = [nc if a == "nc" else anchors if a == "anchors" else a for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if m in (Conv, Bottleneck, SPP, SPPF, DWConv, Focus, C3):
            c1, c2 = ch[f], args[0]
            if c2 != no:
                c2 = make_divisible(c2 * gw, 8)
            args = [c1, c2, *args[1:]]
            if m is C3:
                args.insert(2, n)
                n = 1
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        elif m is Detect:
            args.append([ch[x] for x in f])
        else:
            c2 = ch[f]
        module = nn.Sequential(*(m(*args) for _ in range(n))) if n > 1 else m(*args)
        module.i, module.f, module.type = i, f, f"models.common.{m_name}"
        module.np = sum(x.numel() for x in module.parameters())
        save.extend(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            ch = []
        ch.append(c2)
    return nn.Sequential(*layers), sorted(save)


# Pickled class name -> class, for the loader's find_class and the test-checkpoint writer.
PICKLED_CLASSES: dict[tuple[str, str], type] = {
    (PICKLE_MODULE_YOLO, "Model"): Model,
    (PICKLE_MODULE_YOLO, "DetectionModel"): Model,
    (PICKLE_MODULE_YOLO, "Detect"): Detect,
    **{(PICKLE_MODULE_COMMON, c.__name__): c for c in (Conv, DWConv, Bottleneck, C3, SPP, SPPF, Focus, Concat)},
}

_BACKBONE_P5 = [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                [-1, 9, "C3", [512]], [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]],
                [-1, 1, "SPPF", [1024, 5]]]
_HEAD_P5 = [[-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 6], 1, "Concat", [1]],
            [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]], [-1, 1, "Conv", [256, 3, 2]],
            [[-1, 14], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [512, 3, 2]],
            [[-1, 10], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]], [[17, 20, 23], 1, "Detect", ["nc", "anchors"]]]
_BACKBONE_P6 = [[-1, 1, "Conv", [64, 6, 2, 2]], [-1, 1, "Conv", [128, 3, 2]], [-1, 3, "C3", [128]],
                [-1, 1, "Conv", [256, 3, 2]], [-1, 6, "C3", [256]], [-1, 1, "Conv", [512, 3, 2]],
                [-1, 9, "C3", [512]], [-1, 1, "Conv", [768, 3, 2]], [-1, 3, "C3", [768]],
                [-1, 1, "Conv", [1024, 3, 2]], [-1, 3, "C3", [1024]], [-1, 1, "SPPF", [1024, 5]]]
_HEAD_P6 = [[-1, 1, "Conv", [768, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 8], 1, "Concat", [1]],
            [-1, 3, "C3", [768, False]], [-1, 1, "Conv", [512, 1, 1]], [-1, 1, "nn.Upsample", [None, 2, "nearest"]],
            [[-1, 6], 1, "Concat", [1]], [-1, 3, "C3", [512, False]], [-1, 1, "Conv", [256, 1, 1]],
            [-1, 1, "nn.Upsample", [None, 2, "nearest"]], [[-1, 4], 1, "Concat", [1]], [-1, 3, "C3", [256, False]],
            [-1, 1, "Conv", [256, 3, 2]], [[-1, 20], 1, "Concat", [1]], [-1, 3, "C3", [512, False]],
            [-1, 1, "Conv", [512, 3, 2]], [[-1, 16], 1, "Concat", [1]], [-1, 3, "C3", [768, False]],
            [-1, 1, "Conv", [768, 3, 2]], [[-1, 12], 1, "Concat", [1]], [-1, 3, "C3", [1024, False]],
            [[23, 26, 29, 32], 1, "Detect", ["nc", "anchors"]]]
_ANCHORS_P5 = [[10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326]]
_ANCHORS_P6 = [[19, 27, 44, 40, 38, 94], [96, 68, 86, 152, 180, 137], [140, 301, 303, 264, 238, 542],
               [436, 615, 739, 380, 925, 792]]

_MULTIPLES = {"n": (0.33, 0.25), "s": (0.33, 0.50), "m": (0.67, 0.75), "l": (1.0, 1.0), "x": (1.33, 1.25)}


def model_config(arch: str, nc: int = 3) -> dict[str, Any]:
    """The YOLOv5 model dict for ``yolov5{n,s,m,l,x}`` (P5, stride 32) or ``yolov5{n,s,m,l,x}6`` (P6, stride 64).

    MDv5a/MDv5b are ``yolov5x6``.
    """
    if not arch.startswith("yolov5") or arch[6:7] not in _MULTIPLES or arch[7:] not in ("", "6"):
        raise ValueError(f"unknown YOLOv5 architecture {arch!r}; use yolov5n, yolov5s, ..., yolov5n6, ..., yolov5x6")
    gd, gw = _MULTIPLES[arch[6]]
    p6 = arch.endswith("6")
    return {"nc": nc, "depth_multiple": gd, "width_multiple": gw,
            "anchors": deepcopy(_ANCHORS_P6 if p6 else _ANCHORS_P5),
            "backbone": deepcopy(_BACKBONE_P6 if p6 else _BACKBONE_P5),
            "head": deepcopy(_HEAD_P6 if p6 else _HEAD_P5)}
