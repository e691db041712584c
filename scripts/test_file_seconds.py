"""Write tests/file_seconds.json from a JUnit XML report: each test file's seconds in that run (tests/file_order.py).

Usage: ``make test PYTEST_ARGS="--junitxml=run.xml"`` then ``python -m scripts.test_file_seconds run.xml``.
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

from tests.file_order import SECONDS_FILE


def file_seconds(junit: Path) -> dict[str, float]:
    """Seconds per test file (``tests/x/test_y.py``), from each test case's ``classname`` and ``time``."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(junit).iter("testcase"):
        module = (case.get("classname") or "").split("::")[0]
        parts = module.split(".")
        while parts and not parts[-1].startswith("test"):  # a class inside the module
            parts.pop()
        if parts:
            totals["/".join(parts) + ".py"] += float(case.get("time") or 0)
    return {name: round(s, 1) for name, s in sorted(totals.items(), key=lambda kv: -kv[1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("junit", type=Path)
    parser.add_argument("--out", type=Path, default=SECONDS_FILE)
    args = parser.parse_args()
    args.out.write_text(json.dumps(file_seconds(args.junit), indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
