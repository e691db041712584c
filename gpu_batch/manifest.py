"""The shard manifest and shard result documents: the contract between the Functions app and the GPU worker.

Why this module exists: the orchestration never holds image lists (they would bloat the Durable history), so a shard
travels as a small JSON document in blob storage. Both sides (``activities`` writing it, ``gpu_batch.worker`` reading
it, ``activities.merge`` reading the results) import these shapes from here, so the format is defined once.
It must stay importable without torch or azure packages.

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
