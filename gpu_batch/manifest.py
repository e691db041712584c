"""The shard manifest and shard result documents: the contract between the Functions app and the GPU worker.

Why this module exists: the orchestration never holds image lists (they would bloat the Durable history), so a shard
travels as a small JSON document in blob storage. Both sides (``activities`` writing it, ``gpu_batch.worker`` reading
it, ``activities.merge`` reading the results) import these shapes from here, so the format is defined once.
It must stay importable without torch or azure packages.

Failed entries of a results document carry MegaDetector's ``failure`` string plus trapbatch's ``failure_kind`` and
``failure_reason`` (retryable or permanent, and why): they are defined once, at the end of this module, because the
worker writes them and the app's coverage, resubmission and merge read them.

Where these documents live (``layout.manifest_blob`` / ``layout.attempt_results_blob``) is ``gpu_batch.layout``'s
business, like every other blob name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

MANIFEST_VERSION = 1

@dataclass(frozen=True, slots=True)
class ShardManifest:
    """One unit of GPU work: run ``model`` over ``images`` (blob names in ``source_container``).

    ``output_container``/``output_blob`` say where the worker writes its results document (MegaDetector batch format:
    ``{"images": [...], "detection_categories": ..., "info": ...}``), flushing it every few seconds so that a restarted
    attempt can skip images already done.
    """

    task_id: str
    shard_id: str
    attempt: int
    source_container: str
    images: tuple[str, ...]
    output_container: str
    output_blob: str
    model: str
    detection_threshold: float = 0.005
    extra: Mapping[str, Any] = field(default_factory=dict)
    # Images in another storage account (``storage_refs``): its URL and the *name* of the secret that opens it.
    source_account_url: str = ""
    source_credential_secret: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "task_id": self.task_id,
            "shard_id": self.shard_id,
            "attempt": self.attempt,
            "source_container": self.source_container,
            "images": list(self.images),
            "output_container": self.output_container,
            "output_blob": self.output_blob,
            "model": self.model,
            "detection_threshold": self.detection_threshold,
            "extra": dict(self.extra),
            "source_account_url": self.source_account_url,
            "source_credential_secret": self.source_credential_secret,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ShardManifest":
        version = data.get("version", MANIFEST_VERSION)
        if version != MANIFEST_VERSION:
            raise ValueError(
                f"shard manifest version {version!r} is not supported (expected {MANIFEST_VERSION}); "
                "the worker and the Functions app come from different releases: redeploy both"
            )
        images = data["images"]
        if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
            raise ValueError("shard manifest 'images' must be a list of blob names")
        return cls(
            task_id=str(data["task_id"]),
            shard_id=str(data["shard_id"]),
            attempt=int(data["attempt"]),
            source_container=str(data["source_container"]),
            images=tuple(images),
            output_container=str(data["output_container"]),
            output_blob=str(data["output_blob"]),
            model=str(data["model"]),
            detection_threshold=float(data.get("detection_threshold", 0.005)),
            extra=dict(data.get("extra") or {}),
            source_account_url=str(data.get("source_account_url") or ""),
            source_credential_secret=str(data.get("source_credential_secret") or ""),
        )


# ---------------------------------------------------------------- per-image failures in a shard results document
#
# A failed entry keeps MegaDetector's own ``failure`` string (``"image access failure"``: the image could not be
# read or decoded; ``"inference failure"``: it was read but not detected), so every MegaDetector tool reads it, and
# trapbatch adds two fields that say whether running the image again can help:
#
#     {"file": "cam1/IMG_0001.JPG", "failure": "image access failure", "detections": null,
#      "failure_kind": "retryable", "failure_reason": "auth"}
#
# ``failure_kind``:
#     "retryable"  the image was not the problem; the next attempt runs it again (it counts as *missing*: not covered
#                  by ``activities.shard_results.shard_coverage``, resubmitted, and in the merge replaced by any later
#                  attempt's result; still retryable after the last attempt, the merged entry keeps its reason)
#     "permanent"  the image itself is the problem; it is final and never run again
#
# ``failure_reason`` (``FAILURE_REASONS`` maps each to its kind):
#     download       retryable  the storage read failed (connection reset, server error, an error the SDK did not name)
#     auth           retryable  the storage account refused the read: 401/403 (an expired or rotated SAS, a missing
#                               role) or no credential could be obtained
#     throttled      retryable  the storage account is busy: 429/503 (ServerBusy)
#     timeout        retryable  the read timed out (client timeout, 408/504)
#     inference      retryable  read and decoded, but the network's batch failed (GPU error, out of memory on one
#                               image); failure "inference failure"
#     not_processed  retryable  no attempt wrote any result for the image (merged output only; "inference failure")
#     not_found      permanent  the blob or file no longer exists (404)
#     undecodable    permanent  the bytes are not an image PIL can open (zero bytes, corrupt, not an image)
#     listed_not_found permanent a name in the request's image list that the container does not hold (found missing
#                               at enumeration: never sent to the pool; core.imagelist)
#     unsupported    permanent  an image MegaDetector refuses: a pixel mode other than RGB/RGBA/L (CMYK, palette),
#                               16-bit grayscale ("inference failure", as in MegaDetector), over PIL's pixel limit,
#                               or too thin to letterbox
#
# Entries written before these fields existed have a ``failure`` and no kind: they count as permanent (final), which
# is how every failure was treated then. Counts by reason use "unclassified" for them.

FAILURE_KIND = "failure_kind"
FAILURE_REASON = "failure_reason"
RETRYABLE = "retryable"
PERMANENT = "permanent"

REASON_DOWNLOAD = "download"
REASON_AUTH = "auth"
REASON_THROTTLED = "throttled"
REASON_TIMEOUT = "timeout"
REASON_INFERENCE = "inference"
REASON_NOT_PROCESSED = "not_processed"
REASON_NOT_FOUND = "not_found"
REASON_UNDECODABLE = "undecodable"
REASON_UNSUPPORTED = "unsupported"
REASON_LISTED_NOT_FOUND = "listed_not_found"
REASON_UNCLASSIFIED = "unclassified"  # never written: what counts by reason call a failure without a reason

FAILURE_REASONS: Mapping[str, str] = {
    REASON_DOWNLOAD: RETRYABLE, REASON_AUTH: RETRYABLE, REASON_THROTTLED: RETRYABLE, REASON_TIMEOUT: RETRYABLE,
    REASON_INFERENCE: RETRYABLE, REASON_NOT_PROCESSED: RETRYABLE,
    REASON_NOT_FOUND: PERMANENT, REASON_UNDECODABLE: PERMANENT, REASON_UNSUPPORTED: PERMANENT,
    REASON_LISTED_NOT_FOUND: PERMANENT,
}


def failure_fields(reason: str) -> dict[str, str]:
    """The trapbatch fields of a failed entry for ``reason`` (one of ``FAILURE_REASONS``)."""
    return {FAILURE_KIND: FAILURE_REASONS[reason], FAILURE_REASON: reason}


def is_failure(entry: Mapping[str, Any]) -> bool:
    return entry.get("failure") is not None


def failure_kind(entry: Mapping[str, Any]) -> str | None:
    """None for a successful entry, else ``RETRYABLE`` or ``PERMANENT``.

    The entry's own ``failure_kind`` decides; without a valid one, its reason's kind; without either (an entry from
    a worker older than these fields), ``PERMANENT``.
    """
    if not is_failure(entry):
        return None
    kind = entry.get(FAILURE_KIND)
    if kind in (RETRYABLE, PERMANENT):
        return str(kind)
    return FAILURE_REASONS.get(str(entry.get(FAILURE_REASON)), PERMANENT)


def failure_reason(entry: Mapping[str, Any]) -> str | None:
    """None for a successful entry, else its ``failure_reason`` (``REASON_UNCLASSIFIED`` when it has none)."""
    if not is_failure(entry):
        return None
    reason = entry.get(FAILURE_REASON)
    return reason if isinstance(reason, str) and reason else REASON_UNCLASSIFIED


def is_final(entry: Mapping[str, Any]) -> bool:
    """Whether the image of this entry must not be run again: a success or a permanent failure."""
    return failure_kind(entry) != RETRYABLE
