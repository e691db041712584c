"""Batched inference, non-maximum suppression and MegaDetector-format detections.

Why this module exists: it is the numeric heart of the worker, kept free of I/O so that it can be tested against
MegaDetector directly. Each step mirrors ``megadetector.detection.pytorch_detector`` (classic compatibility mode,
the default of ``run_detector_batch``):

* NMS = ``pytorch_detector.nms``: keep anchors with objectness > threshold, score = objectness x class prob, best
  class only, score > threshold, per-class ``torchvision.ops.nms`` at IoU 0.45, at most 300 boxes per image. We do
  the per-class, per-image NMS for a whole batch in one ``batched_nms`` call (same result: boxes of different
  classes/images never suppress each other), ``gpu_batch.worker.nms``'s, which runs torchvision's kernel with
  exactly torchvision's ``batched_nms`` logic but without importing the torchvision package (1.4 s per process).
* boxes = YOLOv5 ``scale_boxes`` from the padded input back to the original image, rounded to whole pixels, then
  ``[x_min, y_min, w, h]`` normalized by the original size, **truncated** to 4 decimals; confidence truncated to 3
  (``ct_utils.truncate_float``, as the classic mode does); categories "1"/"2"/"3" = class index + 1.

Must not: decode images, touch storage, or write files.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gpu_batch.worker.loader import LoadedModel
from gpu_batch.worker.nms import batched_nms
from gpu_batch.worker.preprocess import LetterboxGeometry

CONF_DIGITS = 3
COORD_DIGITS = 4
NMS_IOU = 0.45  # MegaDetector's classic-mode value
MAX_DETECTIONS = 300


def truncate(x: float, digits: int) -> float:
    scale = float(10 ** digits)
    return math.floor(x * scale) / scale


class Detector:
    """Runs a loaded network on letterboxed batches and turns raw output into MegaDetector detections."""

    def __init__(self, model: LoadedModel, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    @torch.inference_mode()
    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch``: N x 3 x H x W in [0, 255] (any dtype, any device). Returns N x anchors x (5 + nc)."""
        x = batch.to(self.model.device, non_blocking=True)
        x = x.half() if self.model.half else x.float()
        x /= 255.0
        if self.model.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        out: torch.Tensor = self.model.network(x)[0]
        return out

    @torch.inference_mode()
    def nms(self, prediction: torch.Tensor) -> list[torch.Tensor]:
        """Per image: (n, 6) float32 CPU tensors of [x1, y1, x2, y2, conf, class] in padded-input pixels."""
        conf_thres = self.threshold
        n_images = prediction.shape[0]
        pred = prediction.float()
        img_idx, anchor_idx = torch.nonzero(pred[..., 4] > conf_thres, as_tuple=True)
        x = pred[img_idx, anchor_idx]
        box = torch.empty_like(x[:, :4])
        box[:, 0] = x[:, 0] - x[:, 2] / 2.0
        box[:, 1] = x[:, 1] - x[:, 3] / 2.0
        box[:, 2] = x[:, 0] + x[:, 2] / 2.0
        box[:, 3] = x[:, 1] + x[:, 3] / 2.0
        best_conf, best_cls = (x[:, 5:] * x[:, 4:5]).max(1)
        keep = best_conf > conf_thres
        box, best_conf, best_cls, img_idx = box[keep], best_conf[keep], best_cls[keep], img_idx[keep]
        nc = pred.shape[2] - 5
        kept = batched_nms(box, best_conf, img_idx * nc + best_cls, NMS_IOU)
        dets = torch.cat([box[kept], best_conf[kept, None], best_cls[kept, None].float()], 1).cpu()
        owner = img_idx[kept].cpu()
        out = []
        for i in range(n_images):
            d = dets[owner == i]
            d = d[d[:, 4].argsort(descending=True)][:MAX_DETECTIONS]
            out.append(d)
        return out

    @staticmethod
    def to_md(det: torch.Tensor, g: LetterboxGeometry) -> list[dict[str, Any]]:
        """MegaDetector detections for one image, sorted by confidence (highest first)."""
        if det.shape[0] == 0:
            return []
        det = det.clone()
        h1, w1 = g.padded_shape
        h0, w0 = g.orig_h, g.orig_w
        # YOLOv5 scale_boxes(img1_shape, boxes, img0_shape) without ratio_pad, as the classic mode calls it.
        gain = min(h1 / h0, w1 / w0)
        pad_x, pad_y = (w1 - w0 * gain) / 2, (h1 - h0 * gain) / 2
        det[:, [0, 2]] -= pad_x
        det[:, [1, 3]] -= pad_y
        det[:, :4] /= gain
        det[:, 0].clamp_(0, w0)
        det[:, 1].clamp_(0, h0)
        det[:, 2].clamp_(0, w0)
        det[:, 3].clamp_(0, h0)
        det[:, :4] = det[:, :4].round()
        gn = torch.tensor((w0, h0, w0, h0))
        xyxy = det[:, :4]
        xywh = torch.empty_like(xyxy)
        xywh[:, 0] = (xyxy[:, 0] + xyxy[:, 2]) / 2
        xywh[:, 1] = (xyxy[:, 1] + xyxy[:, 3]) / 2
        xywh[:, 2] = xyxy[:, 2] - xyxy[:, 0]
        xywh[:, 3] = xyxy[:, 3] - xyxy[:, 1]
        # The rest used to be a Python loop over ``.tolist()`` values (float64 arithmetic, ``math.floor``). NumPy
        # float64 does the same IEEE operations in the same order, so the numbers are bit-identical, at a fraction
        # of the GIL time (this runs once per image on the hot path).
        xywh64 = (xywh / gn).numpy().astype(np.float64)
        confs = det[:, 4].numpy().astype(np.float64)
        classes = det[:, 5].numpy()
        categories = classes.astype(np.int64) + 1  # int() of a float truncates toward zero, as astype does
        bad = (categories < 1) | (categories > 3)
        if bad.any():
            raise ValueError(f"model produced class index {int(classes[bad.argmax()])}; MegaDetector models have 3 "
                             "classes")
        xc, yc, w, h = xywh64[:, 0], xywh64[:, 1], xywh64[:, 2], xywh64[:, 3]
        boxes = _truncate_array(np.stack([xc - w / 2.0, yc - h / 2.0, w, h], 1), COORD_DIGITS)
        confs_t = _truncate_array(confs, CONF_DIGITS)
        out = [{"category": _CATEGORY_STR[c], "conf": conf, "bbox": box}
               for c, conf, box in zip(categories.tolist(), confs_t.tolist(), boxes.tolist())]
        out.sort(key=lambda d: d["conf"], reverse=True)
        return out


_CATEGORY_STR = {1: "1", 2: "2", 3: "3"}


def _truncate_array(x: np.ndarray, digits: int) -> np.ndarray:
    """``truncate`` elementwise on float64: ``floor(x * 10**d) / 10**d`` with the same IEEE operations.

    ``math.floor`` returns the exact integer and ``int / int`` is correctly rounded, as is the float64 division of
    that (exactly representable) integer by ``10.0**d``, so the results are identical. Non-finite values raise,
    as ``math.floor`` does.
    """
    if not np.isfinite(x).all():
        raise ValueError("cannot convert float NaN or infinity to integer")
    scale = float(10 ** digits)
    return np.floor(x * scale) / scale
