"""Cost per million images from a measured rate and a pool VM size's price (core/cost.py's table and formula).

    python bench/cost.py                                   # every size in the table, at the rates bench/RESULTS.md
                                                           # records ("rate not measured" where there is none)
    python bench/cost.py --rate 244 --vm-size Standard_NC40ads_H100_v5
    python bench/cost.py --rate 20 --price 0.12            # a Spot or negotiated price per node-hour instead
    python bench/cost.py --rate 244 --vm-size Standard_NC40ads_H100_v5 --shard-images 10000
    python bench/cost.py --rate 339 --vm-size Standard_NC40ads_H100_v5 --resident   # warm resident worker starts

Prints a Markdown table. ``--rate`` is images per second of one worker on one node; a worker's end-to-end rate
(bench/worker_throughput.py) leaves out the ~10 s each shard's worker process spends before it starts timing
(``core.estimate.SHARD_START_S``: interpreter, torch imports), which the node is paid for: ``--shard-images N`` adds
that start-up once per N images, as a task's node time (the ``cost`` block of its status) includes it; with
``--resident`` each shard pays a warm resident worker's ``RESIDENT_SHARD_START_S`` instead (a node's first shard
pays the full start once, which a long run spreads to nothing). Node boot,
image pull and idle nodes are still not in it, so the figures are lower bounds of a bill.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core.cost import PRICE_REGION, VM_PRICES, cost_per_million, node_price, vm_price  # noqa: E402
from core.estimate import RESIDENT_SHARD_START_S, SHARD_START_S  # noqa: E402

# Rates bench/RESULTS.md records, by the VM size they stand for. Only the H100 was ever measured, on a lent
# "NVIDIA H100 80GB HBM3" (SXM) machine, not on Azure's Standard_NC40ads_H100_v5 (H100 NVL): an approximation.
RECORDED: dict[str, tuple[float, str]] = {
    "Standard_NC40ads_H100_v5": (243.8, "H100 80GB HBM3 (lent, not NVL), 20,000-image shard, end to end, 2026-11-23"),
}


def node_rate(rate: float, shard_images: int, start_s: float = SHARD_START_S) -> float:
    """Images per node-second once each shard of ``shard_images`` pays ``start_s`` of worker start-up."""
    return shard_images / (shard_images / rate + start_s) if shard_images else rate


def row(vm_size: str, rate: float | None, note: str, price_override: float, shard_images: int,
        start_s: float = SHARD_START_S) -> str:
    listed = vm_price(vm_size)
    price = node_price(vm_size, price_override)
    gpu = listed.gpu if listed else "?"
    vm_size = vm_size or "(no size)"
    if price.usd_per_hour is None:
        shown_price = "no price (" + price.note + ")"
    else:
        checked = "" if price_override or (listed and listed.verified) else " (unverified)"
        shown_price = f"${price.usd_per_hour:.3f}{checked}"
    if rate is None:
        return f"| {vm_size} | {gpu} | {shown_price} | rate not measured | - | - |"
    per_node = node_rate(rate, shard_images, start_s)
    if price.usd_per_hour is None:
        return f"| {vm_size} | {gpu} | {shown_price} | {rate:g} ({note}) | - | - |"
    return (f"| {vm_size} | {gpu} | {shown_price} | {rate:g} ({note}) | "
            f"${cost_per_million(price.usd_per_hour, rate):.2f} | "
            f"${cost_per_million(price.usd_per_hour, per_node):.2f} at {per_node:.1f} img/node-s |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, help="images per second of one worker (default: the recorded rates)")
    parser.add_argument("--vm-size", help="the pool's VM size (default: every size core/cost.py lists)")
    parser.add_argument("--price", type=float, default=0.0,
                        help="USD per node-hour instead of the list price (as TRAPBATCH_NODE_PRICE_PER_HOUR)")
    parser.add_argument("--shard-images", type=int, default=10_000,
                        help=f"images per shard, each paying {SHARD_START_S:g} s of start-up (default 10000; 0: none)")
    parser.add_argument("--resident", action="store_true",
                        help=f"a resident worker per node: each shard pays {RESIDENT_SHARD_START_S:g} s instead")
    args = parser.parse_args(argv)
    if args.rate is not None and args.rate <= 0:
        parser.error("--rate must be above 0")
    if args.price < 0 or args.shard_images < 0:
        parser.error("--price and --shard-images must be >= 0")
    if args.rate is not None and not args.vm_size and not args.price:
        parser.error("--rate needs --vm-size or --price")
    if args.vm_size:
        sizes = [args.vm_size]
    else:  # a given rate at a given price needs no size; otherwise every size in the table
        sizes = [""] if args.rate is not None else [p.vm_size for p in VM_PRICES.values()]
    print(f"List prices: pay-as-you-go Linux, {PRICE_REGION}, USD per node-hour (core/cost.py says where each is from)")
    print()
    start_s = RESIDENT_SHARD_START_S if args.resident else SHARD_START_S
    print("| VM size | GPU | per node-hour | img/s | $ per million images at that rate | "
          f"$ per million with {args.shard_images:,}-image shards (+{start_s:g} s "
          f"{'warm resident ' if args.resident else ''}start-up each) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for size in sizes:
        if args.rate is not None:
            rate, note = args.rate, "given"
        else:
            rate, note = RECORDED.get(size, (None, ""))
        print(row(size, rate, note, args.price, args.shard_images, start_s))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
