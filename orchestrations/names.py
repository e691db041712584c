"""Names of orchestrators and activities. They are stored in Durable history: choose once, never rename."""
from __future__ import annotations

TASK_ORCHESTRATOR = "task_orchestrator"
SHARDS_ORCHESTRATOR = "run_shards"
REPEATS_ORCHESTRATOR = "remove_repeats"

ENUMERATE = "enumerate_images"
SUBMIT = "submit_shards"
POLL = "poll_shards"
RESUBMIT = "resubmit_shard"
CANCEL = "cancel_pool_tasks"
MERGE = "merge_results"
PREVIEWS = "render_previews"
REMOVE_REPEATS = "remove_repeated_detections"
