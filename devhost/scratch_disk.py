"""The local disk an activity's temporary files take at their peak, measured exactly.

Why: a Flex Consumption instance has 0.8 GB of temporary storage (``core.scratch``) shared by every activity it runs
at once, so each activity's scratch files must stay within a share of it at its largest input. Tests run an
activity inside ``ScratchDisk`` and read ``peak``: the most bytes its temporary files (``tempfile.TemporaryFile``
and files under ``tempfile.TemporaryDirectory``) held at one moment; ``bench/control_plane.py --activity-workers 1``
reads it per activity call (``take_peak``). It replaces ``tempfile``'s two factories while it is entered: for one
thing at a time, not for a host serving tests in parallel.

Exact, not sampled: scratch files only grow while open, so the sum of the open ones peaks just before one of them is
closed (or a directory removed); it is measured at each of those moments.
"""
from __future__ import annotations

import io
import os
import tempfile
from types import TracebackType
from typing import Any


class ScratchDisk:
    def __init__(self) -> None:
        self.peak = 0
        self.created = 0
        self._files: list[_TrackedFile] = []
        self._folders: list[str] = []
        self._saved: tuple[Any, Any] | None = None

    def held(self) -> int:
        total = 0
        for f in self._files:
            if not f.closed:
                total += os.fstat(f.fileno()).st_size
        for folder in self._folders:
            for root, _, names in os.walk(folder):
                for name in names:
                    try:
                        total += os.stat(os.path.join(root, name)).st_size
                    except FileNotFoundError:
                        pass
        return total

    def measure(self) -> None:
        self.peak = max(self.peak, self.held())

    def take_peak(self) -> int:
        """The peak since the last call (or the start), then start again from what is held now."""
        self.measure()
        peak, self.peak = self.peak, self.held()
        return peak

    def _file(self, mode: str = "w+b", *args: Any, **kwargs: Any) -> io.BufferedRandom:
        if mode != "w+b":
            raise AssertionError(f"scratch files are opened w+b here, not {mode!r}")
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        tracked = _TrackedFile(io.FileIO(fd, "w+b"), self)
        self._files.append(tracked)
        self.created += 1
        return tracked

    def _folder(self, *args: Any, **kwargs: Any) -> Any:
        disk = self
        real = self._saved[1] if self._saved else tempfile.TemporaryDirectory

        class Folder(real):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__(*args, **kwargs)
                disk._folders.append(self.name)
                disk.created += 1

            def cleanup(self) -> None:
                disk.measure()
                disk._folders.remove(self.name)
                super().cleanup()

        return Folder()

    def __enter__(self) -> ScratchDisk:
        self._saved = (tempfile.TemporaryFile, tempfile.TemporaryDirectory)
        tempfile.TemporaryFile = self._file  # type: ignore[assignment]
        tempfile.TemporaryDirectory = self._folder  # type: ignore[assignment, misc]
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.measure()
        assert self._saved is not None
        tempfile.TemporaryFile, tempfile.TemporaryDirectory = self._saved  # type: ignore[misc]


class _TrackedFile(io.BufferedRandom):
    def __init__(self, raw: io.FileIO, disk: ScratchDisk) -> None:
        super().__init__(raw)
        self._disk = disk

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self._disk.measure()
        super().close()
