"""Every activity and orchestrator name the app's orchestrators (and starters) call is a function the app registers.

Why: the Durable extension refuses to schedule a call to a function the app does not have ("The function 'x' doesn't
exist, is disabled, or is not an activity function": ext ``DurableTaskExtension.ThrowIfFunctionDoesNotExist``, called
by the async ``DurableOrchestrationContext.CallDurableTaskFunctionAsync``, whose faulted task the out-of-proc shim
ignores): the call is dropped, the orchestrator's ``try``/``except`` never sees it and the whole instance stays
Running forever (devhost fails it; devhost README, fidelity row 45). The orchestration
tests' harness runs the orchestrators alone and checks no registration, and row 45 said no test guarded it: a change
that dropped the CLOSE_JOB activity's registration (4985d25) left every task that reached the pool failing in devhost
(on Azure: never ending) at the close of its job, best-effort ``try`` or not.
"""
from __future__ import annotations

import re
from pathlib import Path

from core import contracts as c
from devhost.functions import index_app

ROOT = Path(__file__).resolve().parents[2]
# core.contracts names that are not functions: external events, custom status keys and a status phrase
NOT_FUNCTIONS = {"CANCEL_EVENT", "CONFIRM_EVENT", "EXPIRY_MOVED_EVENT", "JOB_MAY_STILL_RUN", "UNREACHABLE_KEY",
                 "WAITING_KEY"}


def _called_names() -> dict[str, str]:
    """The ``core.contracts`` names (constant -> function name) that orchestrations/ and api/ refer to as ``c.X``."""
    constants = {k: v for k, v in vars(c).items() if k.isupper() and isinstance(v, str)}
    used: set[str] = set()
    for folder in ("orchestrations", "api"):
        for path in (ROOT / folder).glob("*.py"):
            used |= set(re.findall(r"\bc\.([A-Z][A-Z0-9_]+)\b", path.read_text(encoding="utf-8")))
    return {k: constants[k] for k in sorted(used) if k in constants and k not in NOT_FUNCTIONS}


def test_every_function_the_orchestrators_call_is_registered() -> None:
    import function_app

    index = index_app(function_app.app)
    registered = {name.lower() for name in [*index.activities, *index.orchestrators]}  # OrdinalIgnoreCase
    called = _called_names()
    assert "CLOSE_JOB" in called and "STOP_GROUPS" in called and "SHARDS_ORCHESTRATOR" in called  # the scan works
    missing = {k: v for k, v in called.items() if v.lower() not in registered}
    assert not missing, f"called but not registered by function_app (the instance would fail on Azure): {missing}"
