"""The detector models trapbatch knows by name: which MegaDetector releases, where they are published, their hashes.

Why outside the worker's loader: the app checks a request's model at the edge (a known name, a blob in the models
container, or the operator's default; anything else is refused with the choices) and must not import torch to do
so. The loader (``gpu_batch.worker.loader``) resolves and verifies the same table. Importable without torch or azure.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

BLOB_SCHEME = "blob://"


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A published MegaDetector release: where to get it and the hash its publisher lists."""

    version: str
    url: str
    hash_algorithm: str
    hash_hex: str
    image_size: int = 1280


# URLs and md5 sums as published in MegaDetector's run_detector.known_models (megadetector 10.0.28); the upstream
# table lists md5, not sha256, so md5 is what we can verify against. 'MDV5A' means v5a.0.1, as in MegaDetector.
KNOWN_MODELS: Mapping[str, KnownModel] = {
    "v5a.0.0": KnownModel("v5a.0.0", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5a.0.0.pt",
                          "md5", "ec1d7603ec8cf642d6e0cd008ba2be8c"),
    "v5b.0.0": KnownModel("v5b.0.0", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5b.0.0.pt",
                          "md5", "bc235e73f53c5c95e66ea0d1b2cbf542"),
    "v5a.0.1": KnownModel("v5a.0.1", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5a.0.1.pt",
                          "md5", "60f8e7ec1308554df258ed1f4040bc4f"),
    "v5b.0.1": KnownModel("v5b.0.1", "https://github.com/agentmorris/MegaDetector/releases/download/v5.0/md_v5b.0.1.pt",
                          "md5", "f17ed6fedfac2e403606a08c89984905"),
    "v1000.0.0-redwood": KnownModel(
        "v1000.0.0-redwood", "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/"
        "md_v1000.0.0-redwood.pt", "md5", "74474b3aec9cf1a990da38b37ddf9197"),
    "v1000.0.0-spruce": KnownModel(
        "v1000.0.0-spruce", "https://github.com/agentmorris/MegaDetector/releases/download/v1000.0/"
        "md_v1000.0.0-spruce.pt", "md5", "1c9d1d2b3ba54931881471fdd508e6f2"),
}
MODEL_ALIASES: Mapping[str, str] = {
    "mdv5a": "v5a.0.1", "mdv5b": "v5b.0.1", "v5a.0.0": "v5a.0.0", "v5b.0.0": "v5b.0.0", "v5a.0.1": "v5a.0.1",
    "v5b.0.1": "v5b.0.1",
    **{alias: "v1000.0.0-redwood" for alias in ("mdv1000-redwood", "v1000-redwood", "v1000.0.0-redwood", "redwood")},
    **{alias: "v1000.0.0-spruce" for alias in ("mdv1000-spruce", "v1000-spruce", "v1000.0.0-spruce", "spruce")},
}
# MegaDetector versions whose network family the worker does not implement, and why (refused before downloading).
UNSUPPORTED_MODELS: Mapping[str, str] = {
    **{alias: "MDv1000-cedar is a YOLOv9 network (MegaDetector runs it through the yolov9pip package)"
       for alias in ("mdv1000-cedar", "v1000-cedar", "v1000.0.0-cedar", "cedar")},
    **{alias: "MDv1000-larch is a YOLO11 network (anchor-free; MegaDetector runs it through the AGPL ultralytics "
              "package)" for alias in ("mdv1000-larch", "v1000-larch", "v1000.0.0-larch", "larch")},
    **{alias: "MDv1000-sorrel is a YOLO11 network (anchor-free; MegaDetector runs it through the AGPL ultralytics "
              "package)" for alias in ("mdv1000-sorrel", "v1000-sorrel", "v1000.0.0-sorrel", "sorrel")},
}


def known_model(ref: str) -> KnownModel | None:
    version = MODEL_ALIASES.get(ref.strip().lower())
    return KNOWN_MODELS[version] if version else None


# The one name each published version goes by in a task: a request's alias is replaced by it before the task id is
# computed, so "mdv5a", "MDV5A" and "v5a.0.1" are one task, not three runs of the same model.
CANONICAL_NAMES: Mapping[str, str] = {
    "v5a.0.1": "MDV5A", "v5b.0.1": "MDV5B", "v1000.0.0-redwood": "MDV1000-REDWOOD",
    "v1000.0.0-spruce": "MDV1000-SPRUCE", "v5a.0.0": "v5a.0.0", "v5b.0.0": "v5b.0.0",
}


def canonical_name(ref: str) -> str:
    """A published model's one name (``CANONICAL_NAMES``); any other reference (a checkpoint blob) as given."""
    model = known_model(ref)
    return CANONICAL_NAMES[model.version] if model is not None else ref


def known_names() -> list[str]:
    """The names a request may use for a published model (the canonical ones; aliases are accepted too)."""
    return ["MDV5A", "MDV5B", "MDV1000-REDWOOD", "MDV1000-SPRUCE"]


def unsupported_reason(ref: str) -> str | None:
    return UNSUPPORTED_MODELS.get(ref.strip().lower())


def split_blob_model(ref: str) -> tuple[str, str] | None:
    """``(container, name)`` of a ``blob://<container>/<name>`` reference, or None when it is not one or names a
    blob that cannot be fetched as written.

    Why so strict: the name becomes a URL path and a local path. The HTTP layer resolves ``.``/``..`` folders before
    sending (``blob://models/../other/x.pt`` reads container ``other``: with the nodes' bearer token, unlike a shared
    key, nothing signs the path), and the node's cache joins the name to its folder (``../`` climbs out of it, e.g.
    into the compile cache). A leading ``/``, an empty folder or a backslash is refused for the same reasons."""
    if not ref.startswith(BLOB_SCHEME):
        return None
    container, _, name = ref[len(BLOB_SCHEME):].partition("/")
    if not container or not name or "\\" in ref:
        return None
    if any(part in ("", ".", "..") for part in (container, *name.split("/"))):
        return None
    return container, name
