"""The test checkpoints are built once per set of arguments and code, then copied (make_test_checkpoint.cache_path)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gpu_batch.worker import make_test_checkpoint as mtc


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, int, Any]]:
    """Every build, each writing bytes that name its arguments (the real build is what every other test uses)."""
    made: list[tuple[str, int, Any]] = []

    def build(path: Path, arch: str, seed: int, metadata: dict[str, Any] | None) -> None:
        made.append((arch, seed, metadata))
        path.write_bytes(f"{arch}/{seed}/{metadata}/{len(made)}".encode())

    monkeypatch.setattr(mtc, "_build", build)
    monkeypatch.setenv(mtc.CACHE_ENV, str(tmp_path / "cache"))
    return made


def test_the_same_arguments_build_once_and_give_the_same_bytes(builds: list[Any], tmp_path: Path) -> None:
    first = mtc.write_test_checkpoint(tmp_path / "a" / "one.pt", "yolov5n", 0)
    second = mtc.write_test_checkpoint(tmp_path / "b" / "two.pt", "yolov5n", 0)
    assert builds == [("yolov5n", 0, None)] and second == tmp_path / "b" / "two.pt"
    assert first.read_bytes() == second.read_bytes() == b"yolov5n/0/None/1"
    mtc.write_test_checkpoint(tmp_path / "c.pt", "yolov5n", 1)
    mtc.write_test_checkpoint(tmp_path / "d.pt", "yolov5n", 0, {"image_size": 640})
    mtc.write_test_checkpoint(tmp_path / "e.pt", "yolov5n6", 0)
    assert len(builds) == 4 and (tmp_path / "d.pt").read_bytes() == b"yolov5n/0/{'image_size': 640}/3"
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_change_to_the_models_code_builds_afresh(builds: list[Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    mtc.write_test_checkpoint(tmp_path / "one.pt")
    changed = tmp_path / "yolov5_modules.py"
    changed.write_text(Path(mtc.y5.__file__).read_text() + "\n# changed\n")
    monkeypatch.setattr(mtc.y5, "__file__", str(changed))
    mtc.write_test_checkpoint(tmp_path / "two.pt")
    assert len(builds) == 2


def test_off_builds_every_time_and_an_unwritable_cache_still_gives_the_file(builds: list[Any], tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mtc.CACHE_ENV, "off")
    mtc.write_test_checkpoint(tmp_path / "one.pt")
    mtc.write_test_checkpoint(tmp_path / "one.pt")
    assert len(builds) == 2
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(mtc.CACHE_ENV, str(blocker / "cache"))
    assert mtc.write_test_checkpoint(tmp_path / "three.pt").read_bytes() == b"yolov5n/0/None/3"
