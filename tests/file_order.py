"""The order test files run in: the longest first, so that neither pytest worker is left with a long file at the end.

Why: ``make test`` runs two pytest-xdist workers, one file each at a time (``--dist loadfile``), handing out files in
collection order. xdist's own order (most tests first) put files of a dozen four-minute end-to-end tests last: CI's
last minutes ran one file on one core while the other idled. Longest first (``tests/file_seconds.json``: each
file's seconds in a whole run, written by ``python -m scripts.test_file_seconds JUNIT.xml``) is the classic
longest-processing-time rule; files not in the table count as ``DEFAULT_SECONDS``. A file's own tests keep their
order (module fixtures and tests written in sequence rely on it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

SECONDS_FILE = Path(__file__).with_name("file_seconds.json")
DEFAULT_SECONDS = 10.0


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def longest_files_first(nodeids: Sequence[str], seconds: Mapping[str, float],
                        default: float = DEFAULT_SECONDS) -> list[int]:
    """The indices of ``nodeids`` with whole files ordered by their ``seconds`` (longest first, ties in collection
    order) and each file's tests in their own order."""
    first_seen: dict[str, int] = {}
    for i, nodeid in enumerate(nodeids):
        first_seen.setdefault(file_of(nodeid), i)
    rank = {f: (-float(seconds.get(f, default)), first) for f, first in first_seen.items()}
    return sorted(range(len(nodeids)), key=lambda i: (rank[file_of(nodeids[i])], i))


def load_seconds(path: Path = SECONDS_FILE) -> dict[str, float]:
    """The table, or nothing when it is missing or unreadable (collection order then stays as it is)."""
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in table.items() if isinstance(v, (int, float))} if isinstance(table, dict) else {}
