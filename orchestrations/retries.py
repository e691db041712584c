"""Retry policies of the activities the orchestrators call (their values are part of the orchestration's behaviour)."""
from __future__ import annotations

import azure.durable_functions as df

# Listing a container or streaming a merge can hit transient storage throttling; a few retries spare a failed task.
STORAGE_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
# Pool calls are I/O against a remote service: retry transient failures a few times before failing the task.
POOL_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=2000, max_number_of_attempts=3)
