#!/usr/bin/env bash
# Install the test-only MegaDetector oracle (see requirements/oracle.txt) into the project venv.
# Offline-safe: uses only the package index (PyPI or its mirror); no model weights are downloaded.
# Usage: scripts/install_oracle_deps.sh [path/to/venv]   (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv}"
PIP="$VENV/bin/pip"
# --no-warn-conflicts: the three are installed without the dependencies they declare, on purpose (requirements/oracle.txt);
# pip's resolver would otherwise print an ERROR listing them at every install.
"$PIP" install -q --no-warn-conflicts --no-deps "megadetector==10.0.28" "yolov5==7.0.14" "ultralytics==8.4.190"
"$PIP" install -q --no-warn-conflicts opencv-python-headless==5.1.0.95 tqdm==4.70.1 jsonpickle==4.1.4 \
    humanfriendly==10.0 pandas==3.1.1 matplotlib==3.11.2 seaborn==0.13.2 psutil==7.2.2 "setuptools<81" \
    scikit-learn==1.9.1 fastquadtree==2.4.2
# Smoke check: MegaDetector can import its YOLOv5 utilities (yolov5's pkg_resources warning is not ours to fix).
PYTHONWARNINGS=ignore YOLO_CONFIG_DIR="${TMPDIR:-/tmp}/trapbatch-yolo-config" "$VENV/bin/python" - <<'PY'
from megadetector.detection import pytorch_detector as p
p._initialize_yolo_imports("yolov5")
print("oracle ok")
PY
