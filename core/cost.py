"""What a finished task cost: measured node time at the pool's node price, per task and per million images.

Why this module exists: the estimate (``core.estimate``) says what a task *should* cost from an assumed rate; this says
what it *did* cost from what the pool measured, and the same arithmetic turns a benchmark rate into a price per
million images (``bench/cost.py``). Pure: no I/O, no clock, no environment; the orchestrator calls ``task_cost``
(deterministic, replay-safe) and the settings supply the VM size and any negotiated price.

What is measured, and why node time rather than GPU time: a pool node is a VM, billed for every second it is allocated,
busy or not (docs/deploy.md "Costs"; not re-checked against a Microsoft page here), so the honest rate is images per
*node* second. trapbatch runs one shard attempt per node at a time
(``taskSlotsPerNode: 1`` in infra/app/batch.bicep), so a node's billed time while it works for a task is the wall time
of the attempts it runs. ``node_seconds`` is therefore the sum, over every shard attempt that ended (failed and
resubmitted attempts included), of its pool task's end time minus start time (``gpu_batch.pool.TaskInfo``; on Azure
Batch the task's ``executionInfo.startTime``/``endTime``: "the time at which the Task started running" and "the time
at which the Task completed", Microsoft.Azure.Batch.Protocol.Models.TaskExecutionInformation on learn.microsoft.com;
with ``max_task_retry_count=0`` Batch retries no task). That includes the worker's interpreter and torch start,
the model load and the results upload, i.e. everything the node does for the task, but it leaves out what the node is
billed for outside any task: booting and pulling the worker image, idle minutes before autoscale removes it, and
the OS disk. Nor does it hold a run Batch cut short and ran again (a Spot node preempted under the task: Batch
requeues it): ``startTime`` is then "the most recent time at which the Task started running" (azure-batch's
``BatchTaskExecutionInfo``) and no earlier run's time is exposed. So the cost here is a **lower bound** of the bill,
at list price unless ``TRAPBATCH_NODE_PRICE_PER_HOUR`` says otherwise. The GPU-busy figure (the worker's per-stage
seconds in its stdout summary) would be lower still and is not what anyone pays for.

Formula: cost per million images = price per node-hour / images per node-hour * 1e6, with images per node-hour =
images / node_seconds * 3600. Must not: read the environment, or price anything the pool did not measure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

PRICE_REGION = "eastus"
PRICE_CHECKED = "2026-12-02"


@dataclass(frozen=True, slots=True)
class VmPrice:
    """One VM size's pay-as-you-go Linux list price per node-hour, in USD, in ``PRICE_REGION``."""

    vm_size: str
    gpu: str
    usd_per_hour: float
    verified: bool  # a source we could read on PRICE_CHECKED gave this figure (see VM_PRICES)
    source: str


_RETAIL_API = ("https://prices.azure.com/api/retail/prices?$filter=serviceName eq 'Virtual Machines' and "
               "armRegionName eq 'eastus' and armSkuName eq '<size>' (Linux, Consumption, not Spot/Low Priority)")
_DATASET = ("datareceipts/data-receipts 109-gpu-pricing/hyperscalers.json (Azure rows, region eastus, retrieved "
            "2026-11-09): a third-party copy of the Azure Retail Prices API, not Microsoft's own page")
_DOCS = "docs/deploy.md 'Costs' (as last known, 2024-2025); no current source found on " + PRICE_CHECKED

# The GPU sizes a trapbatch pool uses (infra/main.bicep ``gpuVmSize``; docs/deploy.md lists them).
#
# How each figure was checked (the ``search`` tool over stored docs and pages, 2026-12-02; our build machines cannot
# reach the Retail Prices API, ``_RETAIL_API`` is the query to run before budgeting):
# * Standard_NC24ads_A100_v4 3.673 and Standard_NC40ads_H100_v5 6.98: both in ``_DATASET``, region eastus, the same
#   figures docs/deploy.md already gave. Marked verified, with that source named: it is a copy of Microsoft's API
#   taken three weeks before, not Microsoft's pricing page, which the search did not return.
# * Standard_NC4as_T4_v3 0.526: NOT verified. No pricing page or dataset row for it was found; the figure appears only
#   in third-party code (a test fixture mocking the Retail Prices API answer for eastus, 0.526, and a catalog, 0.53),
#   which agrees with docs/deploy.md's "about $0.53". Kept, marked unverified.
# * Standard_NC8as_T4_v3 0.752 and Standard_NC16as_T4_v3 1.204: NOT verified (docs/deploy.md's "about $0.75 / $1.20"
#   only).
VM_PRICES: Mapping[str, VmPrice] = {p.vm_size.lower(): p for p in (
    VmPrice("Standard_NC4as_T4_v3", "1x T4 16 GB", 0.526, False, _DOCS),
    VmPrice("Standard_NC8as_T4_v3", "1x T4 16 GB", 0.752, False, _DOCS),
    VmPrice("Standard_NC16as_T4_v3", "1x T4 16 GB", 1.204, False, _DOCS),
    VmPrice("Standard_NC24ads_A100_v4", "1x A100 80 GB PCIe", 3.673, True, _DATASET),
    VmPrice("Standard_NC40ads_H100_v5", "1x H100 NVL 94 GB", 6.98, True, _DATASET),
)}

OVERRIDE_ENV = "TRAPBATCH_NODE_PRICE_PER_HOUR"


@dataclass(frozen=True, slots=True)
class NodePrice:
    """The price a cost is computed at: ``usd_per_hour`` None when there is none, and ``note`` says why."""

    usd_per_hour: float | None
    source: str
    note: str = ""


def vm_price(vm_size: str) -> VmPrice | None:
    """The table's entry for ``vm_size`` (case-insensitive: Azure Batch reports pool sizes in lower case), or None."""
    return VM_PRICES.get(vm_size.strip().lower()) if vm_size else None


def node_price(vm_size: str, override_per_hour: float = 0.0) -> NodePrice:
    """The price of one node-hour: the override (``TRAPBATCH_NODE_PRICE_PER_HOUR``, for Spot, low-priority or
    negotiated prices) when above 0, else the list price of ``vm_size``, else none, with a note that says what to set.
    ``vm_size`` is empty when the pool has none (the local and simulated pools)."""
    if override_per_hour < 0 or not math.isfinite(override_per_hour):
        raise ValueError(f"a node price must be a finite number >= 0, not {override_per_hour}")
    if override_per_hour > 0:
        return NodePrice(override_per_hour, f"{OVERRIDE_ENV} (set by the operator)")
    if not vm_size:
        return NodePrice(None, "", f"no VM size (a local pool): no list price applies; set {OVERRIDE_ENV} to price "
                                   "this machine's hour")
    listed = vm_price(vm_size)
    if listed is None:
        return NodePrice(None, "", f"no list price known for VM size {vm_size!r} (core/cost.py lists "
                                   f"{', '.join(p.vm_size for p in VM_PRICES.values())}); set {OVERRIDE_ENV}")
    checked = "" if listed.verified else "unverified, "
    return NodePrice(listed.usd_per_hour, f"pay-as-you-go Linux list price, {PRICE_REGION}, {checked}"
                                          f"as of {PRICE_CHECKED}: {listed.source}",
                     "" if listed.verified else f"the list price of {listed.vm_size} is unverified: check it "
                                                "(docs/deploy.md 'Costs') or set " + OVERRIDE_ENV)


def cost_per_million(usd_per_hour: float, images_per_node_second: float) -> float:
    """USD per million images at ``images_per_node_second`` on nodes of ``usd_per_hour``."""
    if usd_per_hour < 0 or images_per_node_second <= 0:
        raise ValueError("the price must be >= 0 and the rate > 0")
    return usd_per_hour / (images_per_node_second * 3600) * 1e6


def _instant(text: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def attempt_seconds(start: str | None, end: str | None) -> float | None:
    """Wall seconds of one pool task from its start and end times (ISO 8601, as ``gpu_batch.pool.TaskInfo`` carries
    them: ``datetime.isoformat()`` locally, ``str(datetime)`` from the Batch SDK); None when either is missing or
    unreadable, or the end is before the start (a clock we cannot trust)."""
    if not start or not end:
        return None
    began, ended = _instant(start), _instant(end)
    if began is None or ended is None or ended < began:
        return None
    return (ended - began).total_seconds()


def task_cost(images: int, node_seconds: float, attempts: int, attempts_timed: int, vm_size: str,
              override_per_hour: float = 0.0) -> dict[str, Any]:
    """The ``cost`` block of a finished task's status (JSON-ready).

    ``images``: the images the task sent to the pool, for a completed task; for a cancelled or failed one, those of
    them that got a final result (``orchestrations.task._add_pool_work``: its node time is that of the attempts that
    ran, so the rate and price per million are of what ran); ``node_seconds``: the summed wall time of the
    ``attempts_timed`` shard attempts whose pool task gave a start and end time, of ``attempts`` that ended.
    """
    if images < 0 or node_seconds < 0 or attempts_timed < 0 or attempts < attempts_timed:
        raise ValueError("images, node_seconds and attempts must be >= 0, and no more attempts timed than ended")
    price = node_price(vm_size, override_per_hour)
    rate = images / node_seconds if images and node_seconds > 0 else None
    notes = [price.note] if price.note else []
    if attempts_timed < attempts:
        notes.append(f"{attempts - attempts_timed} of {attempts} shard attempts had no start/end time from the pool: "
                     "node_seconds leaves them out")
    usd = price.usd_per_hour * node_seconds / 3600 if price.usd_per_hour is not None else None
    per_million = (cost_per_million(price.usd_per_hour, rate)
                   if price.usd_per_hour is not None and rate is not None else None)
    block: dict[str, Any] = {
        "images": images,
        "node_seconds": round(node_seconds, 3),
        "attempts": attempts,
        "attempts_timed": attempts_timed,
        "images_per_node_second": round(rate, 3) if rate is not None else None,
        "vm_size": vm_size or None,
        "price_per_hour": price.usd_per_hour,
        "price_source": price.source or None,
        "usd": round(usd, 4) if usd is not None else None,
        "usd_per_million_images": round(per_million, 2) if per_million is not None else None,
        "measures": "node time: the wall time of every shard attempt's pool task (worker start-up, model load and "
                    "failed attempts included; of a task Batch ran again after a Spot preemption, its last run only), "
                    "one attempt per node at a time; node boot, image pull, idle autoscaled nodes and disks are not "
                    "in it, so this is a lower bound of the bill",
    }
    if notes:
        block["note"] = "; ".join(notes)
    return block
