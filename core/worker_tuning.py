"""The GPU worker's tuning options an operator may set for every shard (``TRAPBATCH_WORKER_TUNING``), checked.

Why a setting and not a rebuilt image: the options that pay depend on the node (bench/RESULTS.md: two stage threads
or a CPU-decoded share of the JPEGs where the JPEG engine limits a compiled forward; a smaller batch on a small GPU),
and the operator learns which from the worker's own stage seconds. The pools append these words to every shard's
worker command (Azure Batch task command line, local pool), so the resident client hands them on to the node's
server too.

Why a whitelist checked here, torch-free, at the app's start: a Batch task's command line is built from them, so only
known options with checked values may get there (nothing else reaches a node), and a typo fails the app's start with
the option's name instead of every shard failing with exit 2 on a GPU node. ``gpu_batch/tests`` check that the
worker's own parser accepts every option this module lets through.

Must not: import the worker (torch) or read the environment (``core.settings`` does).
"""
from __future__ import annotations

from typing import Callable

from core.errors import ConfigError

VARIABLE = "TRAPBATCH_WORKER_TUNING"


def _whole(low: int, high: int) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        try:
            value = int(text)
        except ValueError:
            return f"a whole number from {low} to {high}"
        return None if low <= value <= high else f"a whole number from {low} to {high}"
    return check


def _fraction(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return "a fraction from 0 to 1"
    return None if 0.0 <= value <= 1.0 else "a fraction from 0 to 1"


def _fraction_or_auto(text: str) -> str | None:
    return None if text == "auto" or _fraction(text) is None else "a fraction from 0 to 1, or auto"


def _one_of(*choices: str) -> Callable[[str], str | None]:
    def check(text: str) -> str | None:
        return None if text in choices else "one of " + ", ".join(choices)
    return check


# option -> its value's check (None: a flag without a value). The same ranges as gpu_batch.worker.__main__.
OPTIONS: dict[str, Callable[[str], str | None] | None] = {
    "--stage-threads": _whole(1, 4),
    "--cpu-decode-share": _fraction_or_auto,
    "--batch-size": _whole(1, 256),
    "--workers": _whole(1, 128),
    "--hw-decode": _one_of("auto", "on", "off"),
    "--stream-priority": _one_of("normal", "high"),
    "--compile": None,
    "--cudnn-benchmark": None,
    "--no-cudnn-benchmark": None,
}
_EXCLUSIVE = ("--cudnn-benchmark", "--no-cudnn-benchmark")


def parse_worker_tuning(text: str) -> tuple[str, ...]:
    """The worker options ``text`` holds (space-separated ``--option value`` words, or ``--flag``), in order.

    Raises ``ConfigError`` naming the variable and the option for anything else: an unknown option, a missing or
    out-of-range value, an option given twice, or both cuDNN choices.
    """
    words = text.split()
    out: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(words):
        option = words[i]
        if option not in OPTIONS:
            raise ConfigError(f"{VARIABLE}: {option!r} is not a worker option it may set; allowed: "
                              + ", ".join(OPTIONS))
        if option in seen:
            raise ConfigError(f"{VARIABLE}: {option} is given twice")
        seen.add(option)
        check = OPTIONS[option]
        if check is None:
            out.append(option)
            i += 1
            continue
        if i + 1 >= len(words) or words[i + 1].startswith("--"):
            raise ConfigError(f"{VARIABLE}: {option} needs a value")
        wrong = check(words[i + 1])
        if wrong:
            raise ConfigError(f"{VARIABLE}: {option} {words[i + 1]!r}: expected {wrong}")
        out += [option, words[i + 1]]
        i += 2
    if all(choice in seen for choice in _EXCLUSIVE):
        raise ConfigError(f"{VARIABLE}: give --cudnn-benchmark or --no-cudnn-benchmark, not both")
    return tuple(out)
