"""The worker's exit codes: a contract between ``python -m gpu_batch.worker`` and the app that watches its pool tasks.

Why a module of its own: the orchestrator decides from an exit code whether another attempt can help. A shard whose
worker could not read its manifest, load its model or open its images' storage account usually fails the same way on
every attempt, so the task ends ``failed`` with the worker's message once a second attempt of the shard ended so
(``orchestrations.shards``), instead of burning ``max_attempts`` GPU starts per shard and hiding the cause behind
"completed_with_errors"; not at the first, because the same exits also come from passing causes (a model download
cut short, a storage timeout, a node whose GPU is gone). Importable without torch or azure packages.
"""
from __future__ import annotations

import re

OK = 0
BAD_INPUT = 2  # bad arguments or an unreadable / malformed manifest
MODEL = 3  # the model cannot be resolved or loaded
OUTPUT = 4  # the results cannot be written (storage hiccups too: worth another attempt)
SOURCE = 5  # the images' storage account cannot be opened (secret missing or unreadable, or its Key Vault's host
# name does not exist in DNS: gpu_batch.storage_refs.unresolvable_host, still so when asked again for GONE_AFTER_S,
# storage_refs.key_vault_reader's host_grace_s; a resolver that did not answer is 69), or
# image reads found the account's own host name missing from DNS for GONE_AFTER_S (deleted after enumeration: the shard
# stops there with its results so far flushed, gpu_batch.worker.sources.SourceGone; a shard whose reads all failed so
# sooner waits that long at its end, asking DNS again; a resolver that did not answer fails the image as a retryable
# ``download``)
# The node-resident worker (gpu_batch.worker.resident) went away mid-shard: the client's exit when the server died
# after accepting the shard, and the server's own exit when a shard it was told to stop never did. EX_TEMPFAIL
# (sysexits.h): not in UNFIXABLE, so the app retries the shard, and the next attempt resumes from what was flushed.
SERVER_LOST = 75
# A shard stopped on request with its results so far flushed: the worker CLI got SIGTERM (a terminate, ``docker
# stop``: gpu_batch.worker.__main__.SigtermStop), or a resident worker's client went away. 128 + SIGTERM, the code of a
# process that signal killed; not in UNFIXABLE, so the app retries it like any crash and the next attempt resumes.
CANCELLED = 143
# Another run of the same shard attempt wrote the attempt's results since this one read or last wrote them (Azure Batch
# reran the task after losing this node while this process lived on): this run stopped at its next write without
# writing anything more for the attempt, so that the other run's results stand (gpu_batch.worker.results.OutputTaken).
# EX_CANTCREAT (sysexits.h): not in UNFIXABLE, so when the pool sees this exit (the rerun lost the race to a run that is
# still going) the shard's missing images go to the next attempt as after any retryable exit.
OUTPUT_TAKEN = 73
# Storage could not be reached, was busy or timed out while the worker read its shard manifest or downloaded its
# ``blob://`` model, or Key Vault did so while it read the images' secret, after the SDK's own retries: no answer at
# all, a 5xx, a 408 or a 429; the node's managed-identity token endpoint (IMDS) not answering either read counts too
# (gpu_batch.storage_refs.token_endpoint_did_not_answer; a missing identity stays SOURCE or BAD_INPUT), and so does
# the worker's own storage host that DNS said does not exist at either read and whose resolver then did not answer
# (DNS is asked again for GONE_AFTER_S first: gpu_batch.worker.__main__._read_through_dns_blips; still "no such name"
# then stays BAD_INPUT or MODEL), and a published model's download host that did not answer for now or said "later"
# (gpu_batch.worker.loader.download_did_not_answer; one DNS says does not exist, a connection timed out or refused
# before any answer, as a node without internet meets, or a 404, stays MODEL).
# EX_UNAVAILABLE (sysexits.h): not in UNFIXABLE, so the app runs the shard again (nothing was written). Why not
# BAD_INPUT: every worker reads its manifest first, so a storage outage or throttling at a run's start met a second
# attempt the same way and failed the whole task as "could not start its shard" (the second unfixable exit of a shard
# ends the task, orchestrations.shards), losing every image of the run. Nor does it spend one of a shard's
# attempts for an hour from the shard's first (orchestrations.shards "Unavailable exits"): such a worker ends in
# seconds, and a node whose identity endpoint was out took most of the queued attempts and gave their shards up.
STORAGE_UNAVAILABLE = 69

# No retry should fix these: the same manifest, model and source give the same failure on the next attempt.
UNFIXABLE: dict[int, str] = {
    BAD_INPUT: "the worker could not start its shard (its manifest, arguments or device)",
    MODEL: "the model cannot be loaded",
    SOURCE: "the images' storage account cannot be opened",
}


# The pool's failure code for a task the pool itself ended: its wall-clock limit (``maxWallClockTime``, the run's
# ``max_task_seconds``) or a terminate. Azure Batch's ``failureInfo.code`` (batch-job-task-error-checking.md,
# "Constraint errors": a task past its maximum time "is marked as completed. The exit code is set to 0xC000013A"
# with code TaskEnded); LocalPool and the simulated pool report the same code. Why it matters: such a task has an
# exit code too (the SDK's ``exit_code``: when "the Batch service terminates the Task (due to timeout, or user
# termination via the API) you may see an operating system-defined exit code"), which is not the worker's own.
TASK_ENDED = "TaskEnded"


def unfixable_reason(exit_code: int | None, failure_code: str | None = None) -> str | None:
    """What went wrong, when ``exit_code`` is one no further attempt can fix; None otherwise (and None when the pool
    ended the task, ``TASK_ENDED``: its exit code is then the operating system's, not the worker's)."""
    if exit_code is None or failure_code == TASK_ENDED:
        return None
    return UNFIXABLE.get(exit_code)


def pool_ended(exit_code: int | None, failure_code: str | None, failure_message: str | None) -> bool:
    """Whether the pool, not the worker's own exit, ended a pool task: failure code ``TASK_ENDED`` whatever the exit
    code (its time limit, a terminate), or a failure without an exit code (a task that never started: an image the
    pool cannot pull). A report without a failure code (one recorded before pools gave it) is judged by the second
    test alone, as it was then."""
    return failure_code == TASK_ENDED or (exit_code is None and bool(failure_message))


# The worker's label in front of each of its log lines (gpu_batch.worker.__main__: ``task=... shard=... attempt=N``)
_LABEL = re.compile(r"^task=\S+ shard=\S+ attempt=\d+:? ")


def worker_error_message(log_text: str) -> str:
    """The worker's own last error from its log (``<time> ERROR <logger>: <message>``), for the task's status, without
    the worker's ``task=... shard=... attempt=N`` label. Why without: every text the app makes of it names the shard
    and attempt already ("(shard s00000 attempt 2, worker exit code 3): ..."), and the status keeps the first 500
    characters of an error (``core.errors.failure_line``; an unreachable shard's note 300): the label's ~60 cut the
    end of the worker's advice off, e.g. a model that could not be downloaded lost the models-container way out."""
    for line in reversed(log_text.splitlines()):
        head, sep, message = line.partition(" ERROR ")
        if sep:
            said = message.partition(": ")[2].strip() or message.strip()
            return _LABEL.sub("", said)
    return ""
