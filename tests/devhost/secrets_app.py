"""A Durable app whose activities and orchestrator fail with a SAS in their text: once as raised (what the platform
then keeps, devhost too: fidelity row 44), once through ``core.failures.failures_without_secrets`` (as trapbatch's)."""
from __future__ import annotations

from typing import Any, Generator

import azure.durable_functions as df
import azure.functions as func

from core.failures import failures_without_secrets

SECRET = "DEVHOSTSECRET"
app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)


def _read(name: str) -> str:
    try:
        raise OSError(f"Max retries exceeded with url: /c/{name}?sv=2022-11-02&sig={SECRET}%3D")
    except OSError as cause:
        raise ConnectionError(f"storage did not answer the read of c/{name}") from cause


@app.activity_trigger(input_name="name")
def read_raw(name: str) -> str:
    return _read(name)


@app.activity_trigger(input_name="name")
@failures_without_secrets
def read_cleaned(name: str) -> str:
    return _read(name)


@app.orchestration_trigger(context_name="context")
def failures(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, str]]:
    """Each activity's failure as the orchestrator receives it."""
    seen: dict[str, str] = {}
    for activity in ("read_raw", "read_cleaned"):
        try:
            yield context.call_activity(activity, "b.json")
        except Exception as exc:  # noqa: BLE001 - the failure's text is what this app returns
            seen[activity] = str(exc)
    return seen


@app.orchestration_trigger(context_name="context")
@failures_without_secrets
def failing(context: df.DurableOrchestrationContext) -> Generator[Any, Any, None]:
    """Fails with its activity's failure, the SAS of its cause's text in it."""
    yield context.call_activity("read_raw", "c.json")
