"""Every orchestrator whose custom status the app reads stores one after every work item, in every scenario of the
orchestration tests.

Why: on Azure an episode whose replay set no custom status stores none (``null``); only the first episode of a
generation gone on as new keeps the status carried over (dtfx ``TaskOrchestrationDispatcher``: ``carryOverStatus``,
``runtimeState.Status = result?.CustomStatus``; ``AzureTableTrackingStore.UpdateStateAsync``: ``Status ?? "null"``;
devhost README, fidelity rows 33 and 43; ``replay.Run.stored`` stores as dtfx does). The readers take a missing
status for something: a task's stage ``starting`` (``api.starters._stage``), a shard group counted in none of its
task's counts (``groups_unknown``), a re-render, removal, search or expiry with no stage. So an orchestrator that set
its status only after an await, or in some branches only, would flicker to ``null`` between work items. The results
zip's orchestration sets none by design: its answer reads the runtime status and output (``api.after_task``).
"""
from __future__ import annotations

from core import contracts as c
from tests.orchestrations.test_openapi_status import SCENARIO_MODULES, recorded_runs

# the orchestrators the app reads a custom status of (api/, cli/ through the API)
READ = {c.TASK_ORCHESTRATOR, c.SHARDS_ORCHESTRATOR, c.REPEATS_ORCHESTRATOR, c.REPEAT_SEARCH_ORCHESTRATOR,
        c.RERENDER_ORCHESTRATOR, c.EXPIRY_ORCHESTRATOR}


def test_every_read_status_is_stored_after_every_work_item() -> None:
    runs = recorded_runs(SCENARIO_MODULES + ("tests.orchestrations.test_repeats_orchestrator",
                                             "tests.orchestrations.test_repeat_search_orchestrator",
                                             "tests.orchestrations.test_after_task_orchestrators"))
    seen = {run.name for run, _ in runs} & READ
    assert seen == READ, READ - seen  # every one is run here (the task's runs hold its shard groups')
    gaps = [(run.name, run.status, [i for i, s in enumerate(run.stored) if s is None])
            for run, _ in runs if run.name in READ and (not run.stored or any(s is None for s in run.stored))]
    assert gaps == [], gaps[:5]
