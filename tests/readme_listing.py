"""The files a results README lists (``core.readme``), read back from its text as a person reads it: a line of the
"Files" section that is not indented names a file, a run of numbered Zooniverse batches names each of them."""
from __future__ import annotations

import re

_RUN = re.compile(r"(?P<first>(?P<folder>.*/)?batch-(?P<a>\d+)\.csv) \.\.\. batch-(?P<b>\d+)\.csv \((?P<n>\d+) files.*")


def listed_paths(text: str) -> list[str]:
    """Every path the README's Files section names, in order (a batch run expanded to its files)."""
    section = text.split("\nFiles\n-----\n", 1)[1]
    paths: list[str] = []
    for line in section.splitlines():
        if not line or line.startswith(" "):
            continue
        run = _RUN.fullmatch(line)
        if run is None:
            paths.append(line)
            continue
        width, first, last = len(run.group("a")), int(run.group("a")), int(run.group("b"))
        assert last - first + 1 == int(run.group("n")), line
        paths += [f"{run.group('folder') or ''}batch-{n:0{width}d}.csv" for n in range(first, last + 1)]
    return paths
