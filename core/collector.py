"""The garbage collector's thresholds for a process that runs trapbatch's control plane (the Functions worker).

Why: the merge, exports and repeat search allocate a few short-lived dicts and lists per image, and CPython's
default first-generation threshold (700) runs a collection every few images: 14 % of the merge's per-image CPU
(``bench/RESULTS.md``, ninth session). Its full collections also walk every live object, and the repeat search of a
50,000-image folder holds a few hundred thousand (its candidates): with the default thresholds that walk, repeated
as the heap grows, was most of the search's extra cost per image in large folders (twelfth session). Raising the
thresholds trades a few megabytes of not yet collected objects for that CPU. The function app applies them when the
worker loads it; the benchmarks apply them too, so they measure the search and the merge as the app runs them.
"""
from __future__ import annotations

import gc

THRESHOLDS = (50_000, 20, 100)


def apply() -> None:
    """Set ``THRESHOLDS`` for the whole process."""
    gc.set_threshold(*THRESHOLDS)
