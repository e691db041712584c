"""NMS and output conversion against MegaDetector's own functions, plus the test checkpoint's calibration."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gpu_batch.worker.detector import Detector, truncate
from gpu_batch.worker.loader import load_model
from gpu_batch.worker.preprocess import letterbox_cpu, letterbox_geometry
from gpu_batch.tests.imagegen import textured


def _random_predictions(n: int, anchors: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, anchors, 2, generator=g) * 600
    wh = torch.rand(n, anchors, 2, generator=g) * 120 + 2
    scores = torch.rand(n, anchors, 4, generator=g) ** 3
    return torch.cat([xy, wh, scores], 2)


def test_batched_nms_equals_megadetector_nms() -> None:
    try:
        from megadetector.detection import pytorch_detector as pd
    except ImportError as exc:
        pytest.fail(f"megadetector oracle missing ({exc}): run scripts/install_oracle_deps.sh", pytrace=False)
    pred = _random_predictions(3, 4000, seed=1)
    ours = Detector.__new__(Detector)
    ours.threshold = 0.005
    mine = ours.nms(pred)
    theirs = pd.nms(pred.clone(), conf_thres=0.005, iou_thres=0.45)
    assert len(mine) == len(theirs) == 3
    for a, b in zip(mine, theirs):
        assert a.shape == b.shape and a.shape[0] > 10
        order_a, order_b = a[:, 4].argsort(descending=True), b[:, 4].argsort(descending=True)
        torch.testing.assert_close(a[order_a], b[order_b])


def test_to_md_normalizes_truncates_and_clips() -> None:
    g = letterbox_geometry(1536, 2048, 1280, 64)  # scale 0.625, no padding
    det = torch.tensor([[100.0, 200.0, 300.0, 400.0, 0.98765, 1.0], [-50.0, -50.0, 20.0, 30.0, 0.5, 0.0]])
    out = Detector.to_md(det, g)
    assert out[0] == {"category": "2", "conf": 0.987,
                      "bbox": [truncate(160 / 2048, 4), truncate(320 / 1536, 4), truncate(320 / 2048, 4),
                               truncate(320 / 1536, 4)]}
    assert out[1]["category"] == "1" and out[1]["bbox"][:2] == [0.0, 0.0]
    with pytest.raises(ValueError, match="class index 3"):
        Detector.to_md(torch.tensor([[1.0, 1.0, 5.0, 5.0, 0.9, 3.0]]), g)


def test_test_checkpoint_gives_a_handful_of_confident_detections(checkpoint: Path) -> None:
    model = load_model(checkpoint)
    det = Detector(model, threshold=0.05)
    counts = []
    for seed in range(3):
        img, g = letterbox_cpu(np.asarray(textured(1024, 768, seed)), 1280, 64)
        out = det.nms(det.forward(torch.from_numpy(img.transpose(2, 0, 1))[None]))[0]
        counts.append(len(Detector.to_md(out, g)))
    assert all(1 <= c <= 200 for c in counts), counts


def _to_md_reference(det: torch.Tensor, g) -> list[dict]:  # type: ignore[no-untyped-def]
    """The original per-detection Python tail of ``to_md`` (before it was vectorized), kept as the reference."""
    if det.shape[0] == 0:
        return []
    det = det.clone()
    h1, w1 = g.padded_shape
    h0, w0 = g.orig_h, g.orig_w
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
    out = []
    for (xc, yc, w, h), conf, cls in zip((xywh / gn).tolist(), det[:, 4].tolist(), det[:, 5].tolist()):
        box = [xc - w / 2.0, yc - h / 2.0, w, h]
        out.append({"category": str(int(cls) + 1), "conf": truncate(conf, 3), "bbox": [truncate(v, 4) for v in box]})
    out.sort(key=lambda d: d["conf"], reverse=True)
    return out


def test_vectorized_to_md_is_bit_identical_to_the_python_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    compared = 0
    for trial, (h0, w0) in enumerate([(1536, 2048), (768, 1024), (600, 800), (2000, 1500), (333, 1001)] * 12):
        g = letterbox_geometry(h0, w0, 1280, 64)
        n = int(torch.randint(0, 300, (1,), generator=gen))
        xy = torch.rand(n, 2, generator=gen) * 1400 - 60
        wh = torch.rand(n, 2, generator=gen) * 400
        conf = torch.rand(n, 1, generator=gen)
        if trial % 3 == 0:
            conf = (conf * 20).round() / 20  # ties: the sort must stay stable as before
        det = torch.cat([xy, xy + wh, conf, torch.randint(0, 3, (n, 1), generator=gen).float()], 1)
        assert Detector.to_md(det, g) == _to_md_reference(det, g)
        compared += n
    assert compared > 3000
