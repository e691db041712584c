"""The activity that builds a task's results zip (``adapters.results_bundle`` says what it holds and why)."""
from __future__ import annotations

import azure.durable_functions as df

from adapters import clients
from adapters.results_bundle import write_zip
from core import contracts as c

bp = df.Blueprint()


@bp.activity_trigger(input_name="payload", activity=c.BUILD_RESULTS_ZIP)
def build_results_zip(payload: c.ResultsZipInput) -> c.ResultsZipOutput:
    s = clients.settings()
    made = write_zip(clients.store(s), s.container, payload["task_id"])
    return {"blob": made["zip"], "files": len(made["files"]), "bytes": made["bytes"]}
