"""Test files run longest first, each file's tests in their own order (tests/file_order.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.file_order import SECONDS_FILE, load_seconds, longest_files_first

ROOT = Path(__file__).resolve().parents[2]


def test_whole_files_go_longest_first_and_keep_their_tests_order() -> None:
    ids = ["a.py::t1", "a.py::t2", "b.py::t1", "c.py::t1", "c.py::t2", "c.py::t3", "d.py::t1"]
    order = [ids[i] for i in longest_files_first(ids, {"b.py": 300, "c.py": 5, "a.py": 40}, default=10)]
    assert order == ["b.py::t1", "a.py::t1", "a.py::t2", "d.py::t1", "c.py::t1", "c.py::t2", "c.py::t3"]
    tied = [ids[i] for i in longest_files_first(ids, {}, default=1)]
    assert tied == ids  # no figures: collection order


def test_the_table_names_existing_files_and_a_missing_one_changes_nothing(tmp_path: Path) -> None:
    table = load_seconds()
    assert table and all((ROOT / name).is_file() for name in table), [n for n in table if not (ROOT / n).is_file()]
    assert load_seconds(tmp_path / "none.json") == {}
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert load_seconds(tmp_path / "bad.json") == {}


def test_the_table_is_written_from_a_junit_report(tmp_path: Path) -> None:
    report = tmp_path / "run.xml"
    report.write_text('<testsuites><testsuite>'
                      '<testcase classname="tests.unit.test_a" name="x" time="1.5"/>'
                      '<testcase classname="tests.unit.test_a.TestGroup" name="y" time="2"/>'
                      '<testcase classname="gpu_batch.tests.test_b" name="z" time="7.25"/>'
                      '</testsuite></testsuites>')
    out = tmp_path / "seconds.json"
    subprocess.run([sys.executable, "-m", "scripts.test_file_seconds", str(report), "--out", str(out)], cwd=ROOT,
                   check=True, capture_output=True)
    assert json.loads(out.read_text()) == {"gpu_batch/tests/test_b.py": 7.2, "tests/unit/test_a.py": 3.5}
    assert list(json.loads(out.read_text())) == ["gpu_batch/tests/test_b.py", "tests/unit/test_a.py"]
    assert SECONDS_FILE.name == "file_seconds.json"


def test_the_collection_runs_the_longest_file_first() -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "tests/unit/test_file_order.py", "tests/integration/test_end_to_end.py"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if "::" in ln]
    assert lines and lines[0].startswith("tests/integration/test_end_to_end.py::"), proc.stdout[-2000:]
