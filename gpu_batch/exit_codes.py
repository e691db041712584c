"""The worker's exit codes: a contract between ``python -m gpu_batch.worker`` and the app that watches its pool tasks.

Why a module of its own: the orchestrator decides from an exit code whether another attempt can help. A shard whose
worker could not read its manifest, load its model or open its images' storage account usually fails the same way on
every attempt, so the task ends ``failed`` with the worker's message once a second attempt of the shard ended so
(``orchestrations.shards``), instead of burning ``max_attempts`` GPU starts per shard and hiding the cause behind
"completed_with_errors"; not at the first, because the same exits also come from passing causes (a model download
cut short, a storage timeout, a node whose GPU is gone). Importable without torch or azure packages.
"""
from __future__ import annotations

OK = 0
BAD_INPUT = 2  # bad arguments or an unreadable / malformed manifest
MODEL = 3  # the model cannot be resolved or loaded
OUTPUT = 4  # the results cannot be written (storage hiccups too: worth another attempt)
SOURCE = 5  # the images' storage account cannot be opened (secret missing or unreadable)
# The node-resident worker (gpu_batch.worker.resident) went away mid-shard: the client's exit when the server died
# after accepting the shard, and the server's own exit when a shard it was told to stop never did. EX_TEMPFAIL
# (sysexits.h): not in UNFIXABLE, so the app retries the shard, and the next attempt resumes from what was flushed.
SERVER_LOST = 75
# Another run of the same shard attempt wrote the attempt's results since this one read or last wrote them (Azure Batch
# reran the task after losing this node while this process lived on): this run stopped at its next write without
# writing anything more for the attempt, so that the other run's results stand (gpu_batch.worker.results.OutputTaken).
# EX_CANTCREAT (sysexits.h): not in UNFIXABLE, so when the pool sees this exit (the rerun lost the race to a run that is
# still going) the shard's missing images go to the next attempt as after any retryable exit.
OUTPUT_TAKEN = 73

# No retry should fix these: the same manifest, model and source give the same failure on the next attempt.
UNFIXABLE: dict[int, str] = {
    BAD_INPUT: "the worker could not start its shard (its manifest, arguments or device)",
    MODEL: "the model cannot be loaded",
    SOURCE: "the images' storage account cannot be opened",
}


def unfixable_reason(exit_code: int | None) -> str | None:
    """What went wrong, when ``exit_code`` is one no further attempt can fix; None otherwise."""
    return UNFIXABLE.get(exit_code) if exit_code is not None else None


def worker_error_message(log_text: str) -> str:
    """The worker's own last error from its log (``<time> ERROR <logger>: <message>``), for the task's status."""
    for line in reversed(log_text.splitlines()):
        head, sep, message = line.partition(" ERROR ")
        if sep:
            return message.partition(": ")[2].strip() or message.strip()
    return ""
