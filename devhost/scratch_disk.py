"""The local disk the activities' temporary files take: measured exactly, and capped as a Flex instance caps it.

Why: a Flex Consumption instance has 0.8 GB of temporary storage (``core.scratch``) for everything it runs at once;
past it a write fails with "No space left on device". devhost runs every activity in one process, as one instance
would, so while a ``ScratchDisk`` is entered (devhost enters one for as long as it serves, ``DevHost(scratch_cap=)``)
every ``tempfile.TemporaryFile("w+b")`` and every file under a ``tempfile.TemporaryDirectory`` of the process is
tracked: a write that takes the tracked files past ``cap`` fails with ``ENOSPC``, as it would on Azure, and ``peak``
is the most they held at one moment. ``bench/control_plane.py --activity-workers 1`` reads the peak per activity
call (``take_peak``); tests read it around one activity.

Exact, not sampled: scratch files only grow while open, so the sum of the open ones peaks just before one of them is
closed (or a folder removed), where it is measured; the cap is checked at each write of a tracked file (files under
a folder count in the peak, not in the cap: nothing here writes there any more). One tracker serves the process:
entering a second one while the first is entered shares the first (the strictest cap wins), so a benchmark and the
devhost it runs count the same files.
"""
from __future__ import annotations

import errno
import io
import os
import tempfile
import threading
import weakref
from types import TracebackType
from typing import Any

FLEX_TEMPORARY_STORAGE_BYTES = 800_000_000  # Azure Functions service limits, "Storage (temporary)": Flex, 0.8 GB

_current: ScratchDisk | None = None
_lock = threading.Lock()


class ScratchDisk:
    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap
        self.peak = 0
        self.created = 0
        self._files: weakref.WeakSet[_TrackedFile] = weakref.WeakSet()  # weak: a file dropped unclosed is collected
        self._folders: list[str] = []
        self._saved: tuple[Any, Any] | None = None
        self._shared: ScratchDisk | None = None
        self._written = 0  # what the open tracked files hold, kept at each write (the cap's measure)
        # re-entrant: a tracked file the garbage collector finalizes (closes) may do so on a thread that holds it
        self._lock = threading.RLock()

    def held(self) -> int:
        total = 0
        for f in list(self._files):
            if not f.closed:
                try:
                    total += os.fstat(f.fileno()).st_size
                except (OSError, ValueError):  # closed meanwhile by another thread
                    pass
        for folder in list(self._folders):
            for root, _, names in os.walk(folder):
                for name in names:
                    try:
                        total += os.stat(os.path.join(root, name)).st_size
                    except FileNotFoundError:
                        pass
        return total

    def measure(self) -> None:
        target = self._shared or self
        target.peak = max(target.peak, target.held())

    def take_peak(self) -> int:
        """The peak since the last call (or the start), then start again from what is held now."""
        target = self._shared or self
        target.measure()
        peak, target.peak = target.peak, target.held()
        return peak

    def _grew(self, by: int) -> None:
        with self._lock:
            self._written += by
            over = self.cap is not None and self._written > self.cap
        if over:  # the running count may hold files collected unclosed: check against what the open files hold
            truth = self.held()
            with self._lock:
                self._written = min(self._written, truth + by)
                over = self.cap is not None and self._written > self.cap
        if over:
            raise OSError(errno.ENOSPC, f"No space left on device (devhost: the activities' temporary files would "
                                        f"hold {self._written:,} bytes, more than the {self.cap:,} a Flex Consumption "
                                        "instance has for all it runs; see core/scratch.py)")

    def _released(self, size: int) -> None:
        with self._lock:
            self._written = max(0, self._written - size)

    def _file(self, mode: str = "w+b", *args: Any, **kwargs: Any) -> Any:
        assert self._saved is not None
        if mode != "w+b" or args or kwargs:  # not the scratch files this tracks: the real factory
            return self._saved[0](mode, *args, **kwargs)
        fd, path = tempfile.mkstemp()
        os.unlink(path)
        tracked = _TrackedFile(io.FileIO(fd, "w+b"), self)
        with self._lock:
            self._files.add(tracked)
            self.created += 1
        return tracked

    def _folder(self, *args: Any, **kwargs: Any) -> Any:
        disk = self
        assert self._saved is not None
        real = self._saved[1]

        class Folder(real):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__(*args, **kwargs)
                disk._folders.append(self.name)
                disk.created += 1

            def cleanup(self) -> None:
                disk.measure()
                if self.name in disk._folders:
                    disk._folders.remove(self.name)
                super().cleanup()

        return Folder()

    def __enter__(self) -> ScratchDisk:
        global _current
        with _lock:
            if _current is not None:  # one tracker a process: share it, with the stricter cap
                self._shared = _current
                self._base_created, self._peak_before = _current.created, _current.peak
                _current.peak = _current.held()
                if self.cap is not None and (_current.cap is None or self.cap < _current.cap):
                    self._saved_cap = _current.cap
                    _current.cap = self.cap
                return self
            self._saved = (tempfile.TemporaryFile, tempfile.TemporaryDirectory)
            tempfile.TemporaryFile = self._file
            tempfile.TemporaryDirectory = self._folder  # type: ignore[assignment, misc]
            _current = self
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _current
        self.measure()
        with _lock:
            if self._shared is not None:
                shared = self._shared
                if hasattr(self, "_saved_cap"):
                    shared.cap = self._saved_cap
                self.peak, self.created = shared.peak, shared.created - self._base_created
                shared.peak = max(self._peak_before, shared.peak)
                self._shared = None
                return
            if _current is self and self._saved is not None:
                tempfile.TemporaryFile, tempfile.TemporaryDirectory = self._saved  # type: ignore[misc]
                _current = None


class _TrackedFile(io.BufferedRandom):
    def __init__(self, raw: io.FileIO, disk: ScratchDisk) -> None:
        super().__init__(raw)
        self._disk = disk
        self._size = 0

    def write(self, data: Any) -> int:
        n = super().write(data)
        end = self.tell()
        if end > self._size:
            grew, self._size = end - self._size, end
            self._disk._grew(grew)
        return n

    def close(self) -> None:
        if not self.closed:
            self.flush()
            self._disk.measure()
            self._disk._released(self._size)
            self._size = 0
            self._disk._files.discard(self)
        super().close()
