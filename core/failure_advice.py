"""What to do about a task's failed images, by failure reason (``gpu_batch.manifest.FAILURE_REASONS``).

Why one module: the advice (which reasons a re-run retries, what a refused read or a host DNS does not know means)
was written on the preview page only (``activities.previews``), and again, in other words, for shards given up
(``orchestrations.task``); the status of a ``completed_with_errors`` task, which the API, the notification and
``trapbatch status`` show, said how many images failed and why but not what to do, so a task whose every image failed
read as "completed ... with errors" and nothing else. Now the page, the given-up shards' hint and the status's
``failures_hint`` say the same from here.

Must not: do I/O. Pure text from counts.
"""
from __future__ import annotations

from typing import Any, Mapping

from gpu_batch.manifest import (FAILURE_REASONS, NO_ACCESS_HINT, REASON_ACCOUNT_NOT_FOUND, REASON_ARCHIVED,
                                REASON_AUTH, REASON_LISTED_NOT_FOUND, REASON_UNSUPPORTED, RETRYABLE)

AUTH_ADVICE = f"the images' storage account refused the GPU nodes' reads (401/403): {NO_ACCESS_HINT}"
ACCOUNT_NOT_FOUND_ADVICE = ("not the photos, their storage account: DNS says its host name does not exist (deleted "
                            "since the task listed it, or misspelt); check the request's source_account_url and that "
                            "the account exists (the task's error names the host)")
ONLY_NEW_ADVICE = ("the task's request posted again with \"only_new\": true (a re-run) runs these images again, with "
                   "any new or changed ones, and keeps every other result")
# The list's content is part of the task id (api.starters ``_check_source``: its SHA-256): a corrected list is another
# task, whose "only_new" has no served results to reuse and runs every listed image. The same list with the photos
# put under its names is the same task, whose "only_new" runs only those (a listed_not_found entry is no shard's
# result, so no reuse keeps it). The advice said to correct the list and keep the other results: it ran them all.
LISTED_NOT_FOUND_ADVICE = ("the request's image list names files its container does not hold: compare those names "
                           "(the failures in the results) with the container's blob names (case-sensitive, relative to "
                           "the request's prefix, '/' between folders); put the photos in the container under the "
                           "names the list gives, then post the same request again with \"only_new\": true (only "
                           "they run, the other images keep their results); a corrected list is another task (the "
                           "list's content is part of the task id), which runs every listed image again")
# Archived photos are offline, not bad: readable once rehydrated (hours: archive-rehydrate-overview.md). Set Blob Tier
# "does not update the blob's ETag" (Azure.Storage.Blobs BlobBaseClient.SetAccessTier reference), so an only_new
# re-run would keep their failures as final (activities.reuse: same name and ETag); a copy (Copy Blob) is a new ETag.
ARCHIVED_ADVICE = ("these photos are in the Archive tier, offline, not damaged: rehydrate them to Hot or Cool (it "
                   "takes hours), then post the task's request again with \"rerun\": true (\"only_new\" keeps their "
                   "failures, since rehydrating in place keeps a photo's ETag; photos copied to an online tier have "
                   "a new one and run with \"only_new\")")
# Unsupported photos are readable, in a form MegaDetector refuses (gpu_batch/manifest.py's table: a CMYK or palette
# photo, 16-bit grayscale, over Pillow's pixel limit, too thin): saved again as such a file they run. They were told
# to "stay failed however often they run", which is so only while they stay as they are; a photo written again has a
# new ETag, so "only_new" runs it (activities.reuse: same name and ETag keep a result). Except an image too thin to
# letterbox (gpu_batch.worker.preprocess.letterbox_geometry: its short side scales to no pixel): saved again, even
# scaled down, it is as thin, so it is not told that it runs.
UNSUPPORTED_ADVICE = ("these photos are readable but in a form MegaDetector refuses (CMYK or palette colours, 16-bit "
                      "grayscale, more pixels than Pillow opens): they stay failed as they are; saved again under the "
                      "same names as 8-bit RGB JPEGs (scaled down where too large), they run when the task's request "
                      "is posted again with \"only_new\": true; an image too thin to scale to the detector's size (a "
                      "strip, not a photo; the failure beside it says so) stays failed")
PERMANENT_ADVICE = ("these stay failed however often they run: the file is missing, unreadable, or one MegaDetector "
                    "refuses, and the failure beside each image in the results says which")


def retryable(reasons: Mapping[str, Any] | set[str]) -> list[str]:
    """The reasons among ``reasons`` that a later run may clear (storage busy or refusing, a GPU batch failing),
    sorted."""
    return sorted(r for r in reasons if FAILURE_REASONS.get(r) == RETRYABLE)


def by_reason(reasons: Mapping[str, Any]) -> str:
    """``"undecodable 3, auth 1"``: the counts, largest first."""
    return ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items(), key=lambda kv: (-int(kv[1]), kv[0])))


def advice(reasons: Mapping[str, Any] | set[str]) -> list[str]:
    """One sentence per kind of failure present, each led by the reasons it is about: the retryable ones (a re-run
    with ``only_new``), the permanent ones, how ``archived`` photos are read (rehydrated, then ``rerun``), and what to
    fix before that re-run for ``auth`` and ``account_not_found`` (a re-run alone fails again)."""
    retry = retryable(reasons)
    # listed_not_found is permanent for the list as it is: the list, not the photos, is what to fix (its own line);
    # archived photos are readable once rehydrated (their own line too)
    permanent = sorted(r for r in reasons if r not in retry
                       and r not in (REASON_LISTED_NOT_FOUND, REASON_ARCHIVED, REASON_UNSUPPORTED))
    lines = [f"{', '.join(retry)}: {ONLY_NEW_ADVICE}"] if retry else []
    if permanent:
        lines.append(f"{', '.join(permanent)}: {PERMANENT_ADVICE}")
    if REASON_ARCHIVED in reasons:
        lines.append(f"{REASON_ARCHIVED}: {ARCHIVED_ADVICE}")
    if REASON_UNSUPPORTED in reasons:
        lines.append(f"{REASON_UNSUPPORTED}: {UNSUPPORTED_ADVICE}")
    if REASON_LISTED_NOT_FOUND in reasons:
        lines.append(f"{REASON_LISTED_NOT_FOUND}: {LISTED_NOT_FOUND_ADVICE}")
    if REASON_AUTH in reasons:
        lines.append(f"auth: {AUTH_ADVICE}, before that re-run")
    if REASON_ACCOUNT_NOT_FOUND in reasons:
        lines.append(f"account_not_found: {ACCOUNT_NOT_FOUND_ADVICE}")
    return lines


def failures_hint(reasons: Mapping[str, Any], failed: int, images: int) -> str:
    """The status's ``failures_hint``: how many images failed, why, and what to do; "" when none failed. A task whose
    every image failed says so first: no image has a detection result, whatever its stage's name."""
    if failed <= 0:
        return ""
    head = (f"no image has a result: every one of the {images} failed" if images and failed >= images
            else f"{failed} of {images} images failed")
    if not reasons:  # a status written before the merge counted reasons
        return f"{head}; the failure beside each image in the results says why."
    return f"{head} ({by_reason(reasons)}). " + ". ".join(advice(reasons)) + "."


def without_counts(hint: str, reasons: Mapping[str, Any]) -> str:
    """``failures_hint``'s ``hint`` without its counts by reason (``reasons``, as the hint was made from them): how
    many failed and what to do, as a status too large for the extension keeps it (``core.status_size.fit``), which
    shows the same counts in its ``failure_reasons``. ``hint`` itself where it holds no such counts."""
    return hint.replace(f" ({by_reason(reasons)}). ", ". ", 1) if reasons else hint
