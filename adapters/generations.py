"""Which generation of a task is served: the reader's side of re-runs (``gpu_batch.layout.generation_key``).

Why a pointer blob and not a copy: a re-run writes its whole state and results under its own prefix
(``results/<task>/runs/<run>/``), and promotion rewrites one small blob, ``results/<task>/current.json``. One write
is atomic for readers (the old generation or the new one, never a mix of their files, which a copy of the results,
CSV, exports and preview sample one by one could not promise), costs the same for a 10 GB results file as for a small
one, and leaves the old generation's files in place: read links handed out before (valid for days) keep working
(the old generation is deleted only after every such link has ended: ``core.replaced``).
Every reader of a task's results (``GET .../results``, previews, repeats) resolves the key here first.
"""
from __future__ import annotations

from adapters.blobs import BlobStore
from gpu_batch import layout


def served_generation(store: BlobStore, container: str, task_id: str) -> str:
    """The run id of the generation whose results are the task's; "" for the first generation (no pointer yet)."""
    doc = store.read_json_or_none(container, layout.current_generation_blob(task_id))
    generation = doc.get("generation") if isinstance(doc, dict) else None
    if not isinstance(generation, str) or not generation:
        return ""
    try:
        layout.generation_key(task_id, generation)
    except ValueError:  # not a run id: a pointer trapbatch did not write; serve the first generation
        return ""
    return generation


def served_key(store: BlobStore, container: str, task_id: str) -> str:
    """``layout.generation_key`` of the served generation: pass it wherever a results name takes a task id."""
    return layout.generation_key(task_id, served_generation(store, container, task_id))


def generation_request(store: BlobStore, container: str, key: str) -> dict[str, object] | None:
    """The request a generation was enumerated from (``layout.request_blob``), or None before enumeration wrote it.

    Why not the orchestration's input: a task's input is its latest request, and a re-run under another name (a
    label, not part of the task id) that ended without results leaves the earlier generation served; pages rendered
    again for that generation must carry the name of the request that made its results."""
    doc = store.read_json_or_none(container, layout.request_blob(key))
    return doc if isinstance(doc, dict) else None
