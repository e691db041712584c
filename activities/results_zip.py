"""The activities that build a task's results zip (``adapters.results_bundle`` says what it holds and why).

Up to ``zip_parts.PART_BYTES`` of files, ``build_results_zip`` writes the zip in one pass; above, it writes nothing
and answers the plan of parallel parts (``adapters.zip_parts``), which ``results_zip_part``, ``results_zip_combine``
and ``results_zip_clean`` carry out. A history recorded before parts existed holds a built zip, never a plan, so it
replays as before.
"""
from __future__ import annotations

import azure.durable_functions as df

from adapters import clients, zip_parts
from adapters.blobs import BlobStore
from adapters.results_bundle import write_zip
from core import contracts as c
from core.failures import failures_without_secrets
from gpu_batch import layout

bp = df.Blueprint()


def run_build(store: BlobStore, container: str, task_id: str, part_bytes: int | None = None) -> c.ResultsZipOutput:
    """The zip in one pass when its files are small enough, else the plan of its parts (``part_bytes``: default
    ``zip_parts.PART_BYTES``, read at the call)."""
    part_bytes = part_bytes or zip_parts.PART_BYTES
    made = zip_parts.plan(store, container, task_id, part_bytes)
    if sum(f["size"] for f in made["files"]) > part_bytes:
        return c.ResultsZipOutput(blob=layout.results_zip_blob(task_id, made.get("build", "")),
                                  files=len(made["files"]), bytes=0, plan=made)
    written = write_zip(store, container, task_id, {f["name"]: dict(f) for f in made["files"]},  # one listing
                        made.get("build", ""))  # the zip under the build's own name
    return c.ResultsZipOutput(blob=written["zip"], files=len(written["files"]), bytes=written["bytes"])


@bp.activity_trigger(input_name="payload", activity=c.BUILD_RESULTS_ZIP)
@failures_without_secrets
def build_results_zip(payload: c.ResultsZipInput) -> c.ResultsZipOutput:
    s = clients.settings()
    return run_build(clients.store(s), s.container, payload["task_id"])


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_PART)
@failures_without_secrets
def results_zip_part(payload: c.ResultsZipPartInput) -> c.ResultsZipPartOutput:
    s = clients.settings()
    return zip_parts.deflate_part(clients.store(s), s.container, payload)


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_COMBINE)
@failures_without_secrets
def results_zip_combine(payload: c.ResultsZipCombineInput) -> c.ResultsZipOutput:
    s = clients.settings()
    return zip_parts.combine(clients.store(s), s.container, payload)


@bp.activity_trigger(input_name="payload", activity=c.RESULTS_ZIP_CLEAN)
@failures_without_secrets
def results_zip_clean(payload: c.ResultsZipCleanInput) -> int:
    s = clients.settings()
    return zip_parts.clean_parts(clients.store(s), s.container, payload["task_id"], payload.get("build", ""))
