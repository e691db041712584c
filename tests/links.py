"""Symbolic links planted in an output folder, as an unpacked archive or another user of a shared folder could leave
them: the CLI must never write through one (tests/integration/test_cli_download.py, test_zooniverse_upload.py)."""
from __future__ import annotations

from pathlib import Path

import pytest


def plant_link(link: Path, target: Path) -> None:
    """A symbolic link at ``link`` to ``target`` (a relative target is kept as given); the test is skipped where this
    system cannot make links (Windows without the privilege)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(target, target_is_directory=(link.parent / target).is_dir())
    except OSError:
        pytest.skip("this system cannot make symbolic links")
