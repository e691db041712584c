"""Parse Bicep files with pycep-parser and print {path: {"ok": bool, "template" | "error": ...}} as JSON.

Run by tests/infra with the interpreter of .venv/infra (requirements/infra-test.txt), where the pycep-parser that
checkov scans with is installed; the test process itself (.venv) does not have it, because checkov's pins cannot
share an environment with torch (see requirements/infra-test.txt).

    .venv/infra/bin/python tests/infra/parse_bicep.py infra/main.bicep infra/app/api.bicep ...
"""
from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path


def main(paths: list[str]) -> None:
    from pycep import BicepParser

    parser = BicepParser()
    out: dict[str, object] = {"_pycep_version": version("pycep-parser")}
    for path in paths:
        try:
            out[path] = {"ok": True, "template": parser.parse(file_path=Path(path))}
        except Exception as exc:  # a parse failure is the answer, reported per file
            out[path] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]}
    json.dump(out, sys.stdout, default=str)


if __name__ == "__main__":
    main(sys.argv[1:])
