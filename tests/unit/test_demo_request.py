"""The demo's request: what its files say about the model that made them."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from core import readme, requests
from scripts import demo
from tests.unit.test_readme import FACTS, FILES


@pytest.mark.parametrize("random_weights", [True, False])
def test_the_demo_names_its_random_weight_model_where_its_files_carry_the_tasks_name(random_weights: bool) -> None:
    """``make demo`` without TRAPBATCH_MODEL runs random weights: the console said the detections are meaningless,
    but the files handed on (README.txt, the Camtrap DP package's title, COCO's description: the request's name)
    did not, so an ecologist given them took 80 boxes of noise for animals."""
    parsed = requests.parse_task_request(demo.demo_request(random_weights), default_model="m.pt")
    assert ("meaningless" in parsed.request_name) is random_weights
    assert parsed.camera_depth == 1
    text = readme.readme_text(dataclasses.replace(FACTS, request_name=parsed.request_name), FILES)
    assert text.splitlines()[0] == f"trapbatch results: {parsed.request_name}"


def test_the_demo_answers_help_without_running_and_refuses_arguments_it_does_not_know(
        capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m scripts.demo --help`` started the demo, which empties its output folder first: an operator asking
    what it does lost the last run's files. It now prints what it does and the variables it reads, and any other
    argument ends it with exit 2, before anything is touched."""
    with pytest.raises(SystemExit) as ended:
        demo.main(["--help"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out
    assert "TRAPBATCH_DEMO_OUTPUT" in shown and "TRAPBATCH_MODEL" in shown
    with pytest.raises(SystemExit) as ended:
        demo.main(["--out", "x"])
    assert ended.value.code == 2


def test_the_demo_runs_as_a_file_too() -> None:
    """``python scripts/demo.py`` failed at its first import (no module named 'adapters'): the project's packages are
    found from the file's place, as ``-m scripts.demo`` finds them from the working directory."""
    proc = subprocess.run([sys.executable, str(Path(demo.__file__)), "--help"], cwd=Path(demo.__file__).parent,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "make demo" in proc.stdout


def test_a_failed_demo_task_names_the_devhost_log_in_the_output_folder_it_was_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``TRAPBATCH_DEMO_OUTPUT=<folder> make demo`` writes devhost.log there, but a failed or timed-out task said
    "see demo-output/devhost.log", a folder that run never wrote."""
    monkeypatch.setattr(demo, "OUT", tmp_path / "elsewhere")

    class Failed:
        def status(self, task_id: str) -> dict[str, object]:
            return {"id": task_id, "stage": "failed", "runtime_status": "Failed", "error": "boom"}

    with pytest.raises(SystemExit) as ended:
        demo._wait_for_task(Failed(), "task-0")  # type: ignore[arg-type]
    assert str(tmp_path / "elsewhere" / "devhost.log") in str(ended.value.code)
    assert "demo-output" not in str(ended.value.code)
