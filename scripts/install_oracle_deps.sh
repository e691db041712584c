#!/usr/bin/env bash
# Install the test-only MegaDetector oracle (see requirements/oracle.txt) into the project venv.
# Offline-safe: uses only the package index (PyPI or its mirror); no model weights are downloaded.
# Usage: scripts/install_oracle_deps.sh [path/to/venv]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PIP="$VENV/bin/pip"
"$PIP" install --no-deps "megadetector==10.0.28" "yolov5==7.0.14" "ultralytics==8.4.190"
"$PIP" install opencv-python-headless tqdm jsonpickle humanfriendly pandas matplotlib seaborn psutil "setuptools<81" \
    scikit-learn fastquadtree
# Smoke check: MegaDetector can import its YOLOv5 utilities.
YOLO_CONFIG_DIR="${TMPDIR:-/tmp}/trapbatch-yolo-config" "$VENV/bin/python" - <<'PY'
from megadetector.detection import pytorch_detector as p
p._initialize_yolo_imports("yolov5")
print("oracle ok")
PY
