"""Keeps the Azure SDK's per-request log lines out of trapbatch's logs, in the worker and in the Functions app.

Why: azure-core's ``HttpLoggingPolicy`` logs every request and its response (URL, headers: ~15 lines) at INFO, under
the ``azure`` logger. The worker logs at INFO by default, so each shard's log carried ~60 lines an image (``make
demo``'s resident worker: 2,409 lines for 41 images; a 10,000-image shard's ``stderr.txt`` on a Batch node tens of
MB). The Functions app is worse off: the Python worker hands INFO and above to the host, and ``host.json``'s
``Information`` level sends them on to Application Insights, which bills each line: every blob request of the
control plane would be a trace. The SDK's warnings and errors still pass; a worker run with ``--log-level debug``
keeps the requests (the one case where they are wanted).

Must not: import anything Azure (the worker's thin resident client imports this package's neighbours only).
"""
from __future__ import annotations

import logging

AZURE_SDK_LOGGER = "azure"  # the parent of azure.core.pipeline.policies.http_logging_policy, azure.identity...


def quiet_azure_sdk() -> None:
    """Let only the SDK's warnings and errors through (its INFO is one record per HTTP request)."""
    logging.getLogger(AZURE_SDK_LOGGER).setLevel(logging.WARNING)
