"""Run MegaDetector's own batch runner (the oracle) in a separate process: ``python md_oracle_runner.py MODEL OUT
IMG...``. Kept out of the test process because MegaDetector's YOLOv5 import puts a top-level ``models``/``utils``
on sys.path and prints heavily."""
from __future__ import annotations

import json
import sys


def main() -> None:
    model, out, images = sys.argv[1], sys.argv[2], sys.argv[3:]
    from megadetector.detection.run_detector_batch import load_and_run_detector_batch, write_results_to_file

    # MegaDetector picks its own device (CUDA when present; it always runs fp32). include_image_size and
    # include_image_timestamp: each success carries the decoded image's width/height and its EXIF capture time,
    # which the worker always writes (compared by test_oracle.compare).
    results = load_and_run_detector_batch(model, images, quiet=True, include_image_size=True,
                                          include_image_timestamp=True)
    write_results_to_file(results, out, detector_file=model)
    json.dump({"ok": True}, sys.stdout)


if __name__ == "__main__":
    main()
