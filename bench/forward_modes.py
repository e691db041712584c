"""Forward-only img/s of the detector under each torch.compile mode, to choose the worker's faster forward (issue 14).

Why a script of its own: the worker's compiled forward (``torch.compile``, default mode, one graph) ran 369-374 img/s
in steady state through a resident worker on an H200 against 343 for the eager forward-only ceiling; what the other
modes give (CUDA graphs through ``reduce-overhead``; Triton autotuning without CUDA graphs) decides where to go next,
and each costs a compile of tens of seconds, so each mode runs in a child process of its own under its own time
limit and a mode that runs past it is reported, not waited for.

On a GPU the input is the letterboxed 1280x960 shape of a 2048x1536 photo filled with noise: the GPU's time does not
depend on the pixel values (on a CPU it does, see ``worker_throughput.ceiling``; use that one there).

Usage: python bench/forward_modes.py [--arch yolov5x6] [--batch 32] [--iters 20] [--modes eager,default,...]
    [--mode-timeout 120] [--workdir W]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere
MODES = ("eager", "default", "reduce-overhead", "max-autotune-no-cudagraphs")


def measure(model_path: Path, mode: str, batch: int, iters: int) -> dict[str, float]:
    """One mode's compile (or first pass) seconds and steady forward-only img/s, in this process."""
    import torch

    from gpu_batch.worker.loader import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    m = load_model(model_path, device=device)
    network = m.network if mode == "eager" else torch.compile(m.network, dynamic=False, mode=mode)
    dtype = torch.float16 if m.half else torch.float32
    height = m.image_size * 3 // 4 // m.stride * m.stride  # 2048x1536 letterboxed: 1280x960
    x = torch.rand(batch, 3, height, m.image_size, device=device, dtype=dtype)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        t = time.monotonic()
        for _ in range(3):
            network(x)
        if device == "cuda":
            torch.cuda.synchronize()
        first_s = time.monotonic() - t
        t = time.monotonic()
        for _ in range(iters):
            network(x)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.monotonic() - t
    return {"first_passes_s": round(first_s, 2), "img_s": round(batch * iters / seconds, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="yolov5x6")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--mode-timeout", type=float, default=120.0, help="seconds for each mode's child process")
    p.add_argument("--workdir", default=None,
                   help="reuse worker_throughput.py's checkpoint there (md_bench_<arch>.pt) or write it there")
    p.add_argument("--child", nargs=2, metavar=("MODEL", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.batch, args.iters)), flush=True)
        return
    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    work = Path(args.workdir or tempfile.mkdtemp(prefix="forward-modes-"))
    model = work / f"md_bench_{args.arch}.pt"  # the same seed and network as worker_throughput.py's
    if not model.exists():  # a YOLOv5x6 takes tens of seconds to build and calibrate
        write_test_checkpoint(model, arch=args.arch)
    results: dict[str, object] = {}
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--batch", str(args.batch), "--iters", str(args.iters),
               "--child", str(model), mode]
        t = time.monotonic()
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.mode_timeout, cwd=REPO)
        except subprocess.TimeoutExpired:
            results[mode] = {"error": f"ran past {args.mode_timeout:g} s"}
        else:
            lines = done.stdout.strip().splitlines()
            results[mode] = (json.loads(lines[-1]) if done.returncode == 0 and lines
                             else {"error": f"rc={done.returncode}: {done.stderr.strip()[-400:]}"})
        results[mode]["process_s"] = round(time.monotonic() - t, 1)  # type: ignore[index]
        print(f"{mode:28} {json.dumps(results[mode])}", flush=True)
    print(json.dumps({"arch": args.arch, "batch": args.batch, "iters": args.iters, "modes": results}))


if __name__ == "__main__":
    main()
