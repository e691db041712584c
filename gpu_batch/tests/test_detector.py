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
