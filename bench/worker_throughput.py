"""Worker throughput vs MegaDetector: ``python bench/worker_throughput.py [--images N] [--arch yolov5x6]``.

Generates N synthetic 2048x1536 textured JPEGs (~1 MB each), builds a random-weight MegaDetector-style checkpoint
of ``--arch`` (real MDv5 weights cannot be downloaded here; speed does not depend on the weight values), then times:

* md_default: megadetector's ``load_and_run_detector_batch`` with its defaults (batch 1, no image queue);
* md_best:    the same with ``batch_size``, ``use_image_queue=True`` and loader workers;
* worker:     ``python -m gpu_batch.worker`` in local mode (fetch/decode pool, batching, fp16 on CUDA);
* ceiling:    the model's forward pass alone on a ready batch of the same images, letterboxed to 1280x960 (fp16 +
              channels_last on CUDA, fp32 on CPU); with ``--worker-compile`` also compiled (``ceiling_compiled``).

Each figure is images / seconds of one run, timed the same way for MegaDetector and the worker: from just before
the model is loaded to the last result (the Python interpreter's start and the torch/torchvision imports excluded for
both; MegaDetector's own YOLOv5 modules, which it imports while loading the model, are inside its clock). The worker's
whole-process wall time is reported too, and so are the worker's steady-state rate (after its first batch) and
its per-stage seconds (main-thread waits for fetch / staging / post-processing, busy time of the staging and
post-processing threads, GPU time of the forward passes). The ratios use the end-to-end figures.
``--md-images N`` times MegaDetector on the first N of the same images (its per-image rate does not depend on N;
it keeps the run inside a 10-minute GPU lease).
``--resident-shards N`` also runs the images as N shards through one resident worker (eager and/or compiling,
``--resident-modes``): a node's rate, the server's start-up and compile included.
``--decode-compare`` (CUDA) also times the worker with ``--hw-decode on`` (the GPU's hardware JPEG engine through
nvImageCodec) and ``--hw-decode off`` (nvJPEG's CUDA backend, the path before it), recorded under
``worker_detail.decode_compare``; every worker record carries the summary's ``decode``, ``decode_reason`` and
``decoded_by`` (which decoder the headline run chose, and how many images each decoder took).
Writes ``bench/results/worker_throughput-<date>-<gpu>.json``. Needs the oracle deps (scripts/install_oracle_deps.sh).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MD_SCRIPT = r"""
import sys, time, json
import torch, torchvision  # imported before the clock starts, as the worker's clock starts after its imports
from megadetector.detection.run_detector_batch import load_and_run_detector_batch
model, listfile, batch, queue, loaders = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
images = open(listfile).read().split("\n")
t = time.monotonic()
kwargs = dict(quiet=True)
if batch > 1 or queue:
    kwargs.update(batch_size=batch, use_image_queue=queue, loader_workers=loaders, preprocess_on_image_queue=queue)
res = load_and_run_detector_batch(model, images, **kwargs)
dt = time.monotonic() - t
assert len(res) == len(images)
print(json.dumps({"seconds": dt, "failures": sum(1 for r in res if r.get("failure"))}))
"""


def _make_block(args: tuple[str, int, int]) -> None:
    """Write images [start, start+count): one texture per block of 16, each image its own window of one noise field.

    Drawing a fresh 2048x1536x3 normal field per image made generation the slowest part of a 10,000-image run;
    windows of a shared, larger field keep every image distinct and equally textured (~1.6 MB at quality 90).
    """
    import cv2
    import numpy as np

    folder, start, count = args
    rng = np.random.default_rng(start)
    margin = 64
    yy, xx = np.mgrid[0:1536, 0:2048].astype(np.float32)
    f = rng.uniform(5, 40, size=3)
    base = np.stack([np.sin(xx / f[0]) * 60 + 128, np.cos(yy / f[1]) * 60 + 128,
                     np.sin((xx + yy) / f[2]) * 60 + 128], -1).astype(np.uint8)
    noise = np.rint(rng.standard_normal((1536 + margin, 2048 + margin, 3), dtype=np.float32) * 18)
    up, down = np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8)
    for i in range(start, start + count):
        dy, dx = rng.integers(0, margin, size=2)
        window = (slice(dy, dy + 1536), slice(dx, dx + 2048))
        pixels = cv2.subtract(cv2.add(base, up[window]), down[window])  # saturating uint8 arithmetic: fast
        ok, encoded = cv2.imencode(".jpg", pixels, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        final = Path(folder) / f"bench_{i:05d}.jpg"
        part = final.with_name(final.name + ".part")  # renamed whole: a reader never sees half an image
        part.write_bytes(encoded.tobytes())
        part.replace(final)


def make_images(folder: Path, n: int) -> list[str]:
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    # A block whose last image exists was written whole before (``--images-only`` in the background on a lent GPU,
    # while the oracle runs): only the missing blocks are made.
    blocks = [(str(folder), start, min(16, n - start)) for start in range(0, n, 16)
              if not (folder / f"bench_{min(start + 16, n) - 1:05d}.jpg").exists()]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(_make_block, blocks))
    return [f"bench_{i:05d}.jpg" for i in range(n)]


def run_md(model: Path, folder: Path, names: list[str], batch: int, queue: bool, loaders: int) -> float:
    listfile = folder.parent / "list.txt"
    listfile.write_text("\n".join(str(folder / n) for n in names))
    env = dict(os.environ, YOLO_CONFIG_DIR=str(folder.parent / "yolo"))
    proc = subprocess.run([sys.executable, "-c", MD_SCRIPT, str(model), str(listfile), str(batch),
                           "1" if queue else "0", str(loaders)], capture_output=True, text=True, env=env,
                          cwd=folder.parent)
    if proc.returncode != 0:
        raise SystemExit(f"megadetector run failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return len(names) / float(out["seconds"])


def run_worker(model: Path, folder: Path, names: list[str], batch: int | None, workers: int,
               extra: list[str] | None = None, env: dict[str, str] | None = None
               ) -> tuple[float, float, dict[str, Any]]:
    manifest = folder.parent / "manifest.json"
    manifest.write_text(json.dumps({"task_id": "bench", "shard_id": "0", "attempt": 1, "source_container": "local",
                                    "images": names, "output_container": "local", "output_blob": "out.json",
                                    "model": str(model)}))
    out = folder.parent / "worker_out.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "gpu_batch.worker", "--manifest-file", str(manifest), "--image-root", str(folder),
           "--output-file", str(out), "--workers", str(workers), "--log-level", "WARNING"]
    if batch:
        cmd += ["--batch-size", str(batch)]
    cmd += extra or []
    # Keep the caller's PYTHONPATH after the repo: on the lent GPU the carried wheels (orjson, nvImageCodec) are there.
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    t = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=pythonpath, **(env or {})))
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"worker failed:\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["done"] == len(names) and summary["failed"] == 0, summary
    return len(names) / summary["seconds"], len(names) / wall, summary


def run_resident_node(model: Path, folder: Path, names: list[str], shards: int, workers: int,
                      compile_models: bool, work: Path, variants: list[list[str]] | None = None,
                      compile_cache: Path | None = None, warmup_images: int = 0,
                      on_variant: Callable[[int, dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """The images as ``shards`` shards, one after another, through one resident worker: a GPU node's rate, once per
    variant of the worker's arguments, all through the same server.

    Each shard is a fresh ``python -m gpu_batch.worker.client`` (what a pool task runs), handing its shard to the
    server the first client starts (``TRAPBATCH_WORKER_RESIDENT=1`` on a node); with ``compile_models`` that server
    compiles the network (``TRAPBATCH_RESIDENT_COMPILE``, Bicep ``residentCompile``) from a cold compile cache, as a
    node's first shard does. A variant's rate runs from its first client's spawn to its last one's exit: the first
    variant's includes the server's imports, model load and compile (as a node's time does) unless a warm-up ran.
    ``variants``: more worker arguments for every shard of each variant (``--resident-args``, e.g.
    ``--stage-threads 2``; default one variant without any); all variants share the server, so only the first pays
    its start, which spends less of a lent GPU's minutes than a server per variant. ``compile_cache``: the
    TorchInductor cache to use (kept between calls: a later mode compiles from a warm cache, as a node's later server
    would); default a fresh one. ``warmup_images`` > 0: a shard of the first that many images runs first, untimed,
    with the first variant's arguments, so every rate is a warm node's (start-up paid once per node, as issue 14
    asks): every timed shard then finds the server, model and compile ready. ``on_variant(i, node)`` is called as
    each variant ends (the caller saves its record then, so a run cut short keeps what finished).
    """

    variants = variants or [[]]
    node = Path(tempfile.mkdtemp(prefix="tbnode", dir="/tmp"))  # short: a Unix socket path has at most 107 bytes
    sock = node / "w.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAPBATCH_")}
    env.update(PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               TRAPBATCH_RESIDENT_SOCKET=str(sock), TRAPBATCH_RESIDENT_IDLE_S="120",
               TRAPBATCH_RESIDENT_COMPILE="1" if compile_models else "0",
               TORCHINDUCTOR_CACHE_DIR=str(compile_cache or node / "inductor-cache"))

    def shard(shard_id: str, part: list[str], extra: list[str], more: tuple[str, ...] = ()) -> dict[str, Any]:
        manifest = node / f"m{shard_id}.json"
        manifest.write_text(json.dumps({"task_id": "bench", "shard_id": shard_id, "attempt": 1,
                                        "source_container": "local", "images": part, "output_container": "local",
                                        "output_blob": "out.json", "model": str(model)}))
        out = work / f"node_out{shard_id}.json"
        out.unlink(missing_ok=True)  # a fresh output: an earlier run's would be resumed, not run again
        proc = subprocess.run([sys.executable, "-m", "gpu_batch.worker.client", "--manifest-file", str(manifest),
                               "--image-root", str(folder), "--output-file", str(out),
                               "--workers", str(workers), "--log-level", "WARNING", *extra, *more],
                              capture_output=True, text=True, cwd=REPO, env=env)
        if proc.returncode != 0:
            raise SystemExit(f"resident shard {shard_id} failed:\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        assert summary["done"] == len(part) and summary["failed"] == 0, summary
        return {**{k: summary.get(k) for k in ("seconds", "model_load_s", "first_batch_s", "steady_img_s", "compiled",
                                               "model_cache_hit", "decode", "start_to_first_batch_s", "batch_size",
                                               "stages", "first_steps_s")},
                "server_pid": (summary.get("resident") or {}).get("server_pid")}

    per = -(-len(names) // shards)
    nodes: list[dict[str, Any]] = []
    warmup: dict[str, Any] | None = None
    try:
        if warmup_images > 0:
            t0 = time.monotonic()
            # cuDNN tunes its algorithms as the timed shards will (they are long enough to): tuned once a process
            chosen = {"--cudnn-benchmark", "--no-cudnn-benchmark"} & set(variants[0])
            warmup = {**shard("warmup", names[:warmup_images], variants[0],
                              () if chosen else ("--cudnn-benchmark",)),
                      "images": min(warmup_images, len(names)), "wall_s": 0.0}
            warmup["wall_s"] = round(time.monotonic() - t0, 3)
        for v, extra in enumerate(variants):
            started = time.monotonic()
            summaries = [shard(f"v{v}s{i}", names[i * per:(i + 1) * per], extra) for i in range(shards)]
            wall = time.monotonic() - started
            nodes.append({"img_s": round(len(names) / wall, 3), "wall_s": round(wall, 3), "shards": shards,
                          "compiled": compile_models, "per_shard": summaries,
                          "warmup": warmup if v == 0 else "the first variant's (one server for every variant)"})
            if on_variant is not None:
                on_variant(v, nodes[-1])
    finally:
        from gpu_batch.worker.resident_protocol import stop_server

        stop_server(sock)
        shutil.rmtree(node, ignore_errors=True)
    return nodes


def limiting_stage(stages: dict[str, float], seconds: float) -> str:
    """A reading of the stage seconds: is the GPU busy, and if not, what did the main thread wait for most?

    The main thread queues the forward passes; while the GPU is the limit it waits in ``main_launch_s`` (CUDA queue
    full) or ``main_wait_post_s`` (post-processing waits for the forward pass), so GPU busy time is judged first.
    """
    gpu = stages.get("gpu_forward_s", 0.0)
    if seconds > 0 and gpu / seconds >= 0.85:
        return f"GPU forward passes ({gpu:.2f} s GPU time of {seconds:.2f} s)"
    waits = {"fetch + header/decode threads": stages.get("main_wait_fetch_s", 0.0),
             "stage thread (decode + letterbox)": stages.get("main_wait_stage_s", 0.0),
             "post thread (NMS + formatting) or the forward pass it waits for": stages.get("main_wait_post_s", 0.0),
             "forward passes (queueing them on a GPU; running them, on a CPU)": stages.get("main_launch_s", 0.0)}
    name, waited = max(waits.items(), key=lambda kv: kv[1])
    return f"{name}: main thread waited {waited:.2f} s of {seconds:.2f} s; GPU forward time {gpu:.2f} s"


def ceiling(model_path: Path, batch: int, iters: int, images: list[Path], compiled: bool = False) -> float:
    """Forward passes alone on a ready batch of the benchmark's own letterboxed images.

    ``compiled``: through the worker's own ``compile_model`` (its compile happens in the warm-up passes), to say how
    far a compiled forward could take the worker at all.

    Real images, not random tensors: on a CPU the forward pass of a random-weight network is markedly slower on
    uniform noise than on photographs (measured 8.6 vs 14.6 img/s for YOLOv5n here), which would understate the ceiling.
    """
    import numpy as np
    import torch

    from gpu_batch.worker.loader import load_model
    from gpu_batch.worker.preprocess import decode_image, letterbox_cpu

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True  # as the worker: the best algorithms for this one shape
    m = load_model(model_path, device=device)
    if compiled:
        from gpu_batch.worker.loader import compile_model

        m = compile_model(m)
    dtype = torch.float16 if m.half else torch.float32
    boxed = [letterbox_cpu(decode_image(p.read_bytes()), m.image_size, m.stride)[0] for p in images[:batch]]
    stacked = np.stack([boxed[i % len(boxed)].transpose(2, 0, 1) for i in range(batch)])
    x = (torch.from_numpy(stacked).to(device).to(dtype) / 255.0)
    if device == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(3):  # warm-up: cuDNN tuning / oneDNN primitive caches
            m.network(x)
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.monotonic()
        for _ in range(iters):
            m.network(x)
        if device == "cuda":
            torch.cuda.synchronize()
    return batch * iters / (time.monotonic() - t)


def compare_decoders(model: Path, folder: Path, names: list[str], workers: int, extra: list[str],
                     detail_keys: tuple[str, ...], worker_detail: dict[str, Any], save: Any) -> None:
    """Time the worker with the hardware JPEG decoder required and switched off (same images, same other arguments).

    A node without the engine (or without nvImageCodec) makes ``--hw-decode on`` exit 2: recorded as the reason, and
    the ``off`` run still happens.
    """
    runs: dict[str, Any] = worker_detail.setdefault("decode_compare", {})
    for mode in ("on", "off"):
        try:
            img_s, _, s = run_worker(model, folder, names, None, workers, [*extra, "--hw-decode", mode])
        except SystemExit as exc:
            runs[mode] = {"error": str(exc)[-1500:]}
            print(f"decode {mode:3s}  failed: {str(exc)[-300:]}")
            save()
            continue
        runs[mode] = {"img_s": round(img_s, 3), **{k: s.get(k) for k in detail_keys}}
        gpu = (s.get("stages") or {}).get("gpu_forward_s")
        print(f"decode {mode:3s}  {img_s:.2f} img/s end to end, steady {s.get('steady_img_s')} img/s, decoder "
              f"{s.get('decode')} {s.get('decoded_by')}, GPU forward {gpu} s of {s.get('seconds')} s")
        save()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--arch", default="yolov5x6")
    p.add_argument("--md-batch", type=int, default=None, help="MegaDetector 'best' batch size (default 8 GPU, 2 CPU)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 4)
    p.add_argument("--workdir", default=None)
    p.add_argument("--md-images", type=int, default=None, help="time MegaDetector on the first N images only")
    p.add_argument("--worker-compile", action="store_true", help="also time the worker with --compile")
    p.add_argument("--worker-args", default="", help='extra worker arguments for experiments, e.g. '
                                                     '"--no-cudnn-benchmark --batch-size 16" (give values starting with -- as --worker-args=...)')
    p.add_argument("--worker-variants", action="append", default=[],
                   help='repeatable: also time the worker with these extra arguments (recorded under '
                        'worker_detail.variants; the headline worker figure stays the plain run)')
    p.add_argument("--record-suffix", default="", help="appended to the record's file name (e.g. -10k)")
    p.add_argument("--decode-compare", action="store_true",
                   help="CUDA: also time the worker with --hw-decode on and with --hw-decode off")
    p.add_argument("--skip-md", action="store_true",
                   help="tuning runs: skip MegaDetector (saves GPU minutes; writes a separate -worker-only record)")
    p.add_argument("--resident-shards", type=int, default=0,
                   help="also run the images as N shards through one resident worker (--resident-modes): a "
                        "node's rate, the server's start-up and compile included")
    p.add_argument("--resident-args", action="append", default=[],
                   help='extra worker arguments for every resident shard, e.g. "--stage-threads 2"; repeat it to run '
                        "the shards once per value, all through one server (only the first pays its start)")
    p.add_argument("--resident-warmup", type=int, default=0,
                   help="with --resident-shards: first run a shard of this many images, untimed, so that the node "
                        "rate is a warm node's (server, model and compile ready; e.g. 256)")
    p.add_argument("--resident-modes", default="eager,compiled",
                   help="with --resident-shards: eager, compiled or both (comma-separated; default both)")
    p.add_argument("--results-dir", default=str(REPO / "bench" / "results"), help="where the record is written")
    p.add_argument("--ceiling-iterations", type=int, default=10,
                   help="timed forward passes of each ceiling figure, after its 3 warm-up passes (default 10; the "
                        "CPU rehearsals in gpu_batch/tests set 1: their record only has to have the figure)")
    p.add_argument("--images-only", action="store_true",
                   help="write the --images into --workdir and exit (a later run there reuses them)")
    p.add_argument("--compile-cold-images", type=int, default=None,
                   help="with --worker-compile: run the cold-cache compile on the first N images only (its first "
                        "batch time is the compile's cost); the warm run still takes every image")
    args = p.parse_args()
    modes = {m.strip() for m in args.resident_modes.split(",")}
    if not modes <= {"eager", "compiled"}:
        p.error(f"--resident-modes {args.resident_modes!r}: use eager, compiled or both")
    if args.ceiling_iterations < 1:
        p.error(f"--ceiling-iterations {args.ceiling_iterations}: at least 1 (the figure is images / timed seconds)")
    if args.images_only:
        t = time.monotonic()
        make_images(Path(args.workdir or tempfile.mkdtemp(prefix="trapbatch-bench-")) / "images", args.images)
        print(f"{args.images} images written in {time.monotonic() - t:.0f}s")
        return

    import torch

    from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

    cuda = torch.cuda.is_available()
    gpu = torch.cuda.get_device_name(0) if cuda else "cpu"
    work = Path(args.workdir or tempfile.mkdtemp(prefix="trapbatch-bench-"))
    folder = work / "images"
    t = time.monotonic()
    names = make_images(folder, args.images)
    size_mb = sum((folder / n).stat().st_size for n in names) / len(names) / 1e6
    print(f"{len(names)} images of 2048x1536 (~{size_mb:.2f} MB) in {time.monotonic() - t:.0f}s; device {gpu}")
    model = work / f"md_bench_{args.arch}.pt"  # reused when there (decode_rates.py and forward_modes.py write it too)
    if not model.exists():
        write_test_checkpoint(model, arch=args.arch)
    md_batch = args.md_batch or (8 if cuda else 2)
    md_names = names[: args.md_images] if args.md_images else names
    if len(md_names) < len(names):
        print(f"MegaDetector runs on the first {len(md_names)} of the {len(names)} images")
    results: dict[str, float] = {}
    if not args.skip_md:
        results["md_default_img_s"] = run_md(model, folder, md_names, 1, False, 4)
        print(f"md_default  {results['md_default_img_s']:.2f} img/s")
        results["md_best_img_s"] = run_md(model, folder, md_names, md_batch, True, min(args.workers, 8))
        print(f"md_best     {results['md_best_img_s']:.2f} img/s (batch {md_batch}, image queue)")
    extra = shlex.split(args.worker_args)
    results["worker_img_s"], results["worker_wall_img_s"], summary = run_worker(model, folder, names, None,
                                                                                args.workers, extra)
    print(f"worker      {results['worker_img_s']:.2f} img/s end to end ({results['worker_wall_img_s']:.2f} counting "
          "interpreter start and imports)")
    detail_keys = ("seconds", "batch_size", "cudnn_benchmark", "import_s", "model_load_s", "first_batch_s",
                   "steady_img_s", "stages", "decode", "decode_reason", "decoded_by", "first_steps_s")
    worker_detail: dict[str, Any] = {k: summary.get(k) for k in detail_keys}
    print(f"worker      model ready after {summary.get('model_load_s')} s, first batch done after "
          f"{summary.get('first_batch_s')} s, steady state {summary.get('steady_img_s')} img/s")
    print(f"worker      decoder {summary.get('decode')} ({summary.get('decode_reason')}); "
          f"decoded by {summary.get('decoded_by')}")
    worker_limit = limiting_stage(summary.get("stages") or {}, float(summary["seconds"]))
    print(f"worker      stage seconds {summary.get('stages')}; limited by {worker_limit}")
    # The ceiling and the record come before the optional extra runs, so a run cut off by a time limit while
    # compiling still leaves the four headline figures on disk; each extra run then rewrites the record.
    results["ceiling_iterations"] = args.ceiling_iterations
    results["ceiling_img_s"] = max(ceiling(model, b, args.ceiling_iterations, [folder / n for n in names[:b]])
                                   for b in ((16, 32) if cuda else (2,)))
    print(f"ceiling     {results['ceiling_img_s']:.2f} img/s (forward only)")
    ratios = {"worker_over_ceiling": round(results["worker_img_s"] / results["ceiling_img_s"], 3)}
    if not args.skip_md:
        ratios["worker_over_md_default"] = round(results["worker_img_s"] / results["md_default_img_s"], 3)
        ratios["worker_over_md_best"] = round(results["worker_img_s"] / results["md_best_img_s"], 3)
    print("end to end: " + ", ".join(f"{k} = {v:.2f}" for k, v in sorted(ratios.items())))
    if summary.get("steady_img_s"):
        print(f"steady state: worker / ceiling = {summary['steady_img_s'] / results['ceiling_img_s']:.2f}")
    date = dt.date.today().isoformat()
    # A tuning run without MegaDetector never overwrites a full record (the figures need all four).
    suffix = ("-worker-only" if args.skip_md else "") + args.record_suffix
    out = Path(args.results_dir) / f"worker_throughput-{date}-{gpu.replace(' ', '_')}{suffix}.json"

    def save() -> None:
        record = {"gpu": gpu, "date": date, "images": len(names),
                  "md_images": 0 if args.skip_md else len(md_names),
                  "model": f"random-weight {args.arch} (MDv5 layout)",
                  **{k: round(v, 3) for k, v in results.items()}, "ratios_end_to_end": ratios,
                  "worker_args": extra, "worker_detail": worker_detail, "worker_limited_by": worker_limit,
                  "cpu_count": os.cpu_count(), "torch": torch.__version__}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")

    save()
    if args.decode_compare and cuda:
        compare_decoders(model, folder, names, args.workers, extra, detail_keys, worker_detail, save)
    for variant in args.worker_variants:
        v_img_s, _, v_summary = run_worker(model, folder, names, None, args.workers, shlex.split(variant))
        worker_detail.setdefault("variants", {})[variant] = {"img_s": round(v_img_s, 3),
                                                             **{k: v_summary.get(k) for k in detail_keys}}
        print(f"variant     {v_img_s:.2f} img/s end to end with {variant!r} (model ready "
              f"{v_summary.get('model_load_s')} s, first batch {v_summary.get('first_batch_s')} s, steady "
              f"{v_summary.get('steady_img_s')} img/s, batch {v_summary.get('batch_size')}); stages "
              f"{v_summary.get('stages')}")
        save()
    if args.resident_shards:
        cache = work / "node-inductor-cache"
        shutil.rmtree(cache, ignore_errors=True)  # the first compiling node starts cold, as a fresh node does
        variant_args = args.resident_args or [""]
        n = 0
        for compiled_node in [m == "compiled" for m in ("eager", "compiled") if m in modes]:
            first = n

            def record(v: int, node: dict[str, Any], compiled_node: bool = compiled_node, first: int = first) -> None:
                key = "resident_node_compiled" if compiled_node else "resident_node"
                key += f"_{first + v + 1}" if len(args.resident_args) > 1 else ""
                node_args = variant_args[v]
                worker_detail[key] = {**node, "args": node_args}
                results[f"{key}_img_s"] = node["img_s"]
                print(f"node        {node['img_s']:.2f} img/s over {args.resident_shards} shards through one "
                      f"resident worker{' compiling' if compiled_node else ''}"
                      f"{f' with {node_args!r}' if node_args else ''}"
                      f"{' after a warm-up shard' if args.resident_warmup > 0 else ''} (first spawn to last exit, "
                      f"{node['wall_s']:.1f} s); / ceiling = {node['img_s'] / results['ceiling_img_s']:.2f}; "
                      "shards: " + "; ".join(f"{r['seconds']} s, first batch {r['first_batch_s']} s, steady "
                                             f"{r['steady_img_s']}" for r in node["per_shard"]))
                last = node["per_shard"][-1]  # a warm shard: what a node's later shards are limited by
                print(f"node        last shard's stage seconds {last.get('stages')}; limited by "
                      f"{limiting_stage(last.get('stages') or {}, last.get('seconds') or 0.0)}; its first steps "
                      f"(s) {last.get('first_steps_s')}")
                save()

            run_resident_node(model, folder, names, args.resident_shards, args.workers, compiled_node, work,
                              [shlex.split(a) for a in variant_args], cache, args.resident_warmup, record)
            n += len(variant_args)
    if args.worker_compile:
        # Twice, sharing one fresh TorchInductor cache: the first run compiles from nothing (a node's first shard),
        # the second finds the kernels cached (every later shard on that node: the worker keeps the cache in the
        # Batch node's shared folder).
        cache = work / "inductor-cache"
        shutil.rmtree(cache, ignore_errors=True)
        cold_names = names[: args.compile_cold_images] if args.compile_cold_images else names
        for key, label, run_names in (("worker_compiled_img_s", "cold", cold_names),
                                      ("worker_compiled_warm_img_s", "warm", names)):
            results[key], _, compiled = run_worker(model, folder, run_names, None, args.workers, ["--compile"],
                                                   env={"TORCHINDUCTOR_CACHE_DIR": str(cache)})
            worker_detail["compiled" if label == "cold" else "compiled_warm_cache"] = {
                "images": len(run_names), **{k: compiled.get(k) for k in detail_keys}}
            print(f"worker      {results[key]:.2f} img/s end to end on {len(run_names)} images with --compile, "
                  f"{label} compile cache (first "
                  f"batch after {compiled.get('first_batch_s')} s, steady {compiled.get('steady_img_s')} img/s); "
                  f"/ ceiling = {results[key] / results['ceiling_img_s']:.2f}")
            save()
        # The compiled forward alone, at the warm run's batch size, from the same (now warm) compile cache: whether
        # any compiled pipeline could reach a target, and how much of the compiled forward the pipeline keeps.
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache)  # read by TorchInductor when it compiles, not at import
        batch = int(worker_detail["compiled_warm_cache"].get("batch_size") or (32 if cuda else 2))
        results["ceiling_compiled_img_s"] = ceiling(model, batch, args.ceiling_iterations,
                                                    [folder / n for n in names[:batch]],
                                                    compiled=True)
        print(f"ceiling     {results['ceiling_compiled_img_s']:.2f} img/s compiled (forward only, batch {batch}); "
              f"compiled warm worker / it = "
              f"{results['worker_compiled_warm_img_s'] / results['ceiling_compiled_img_s']:.2f}")
        save()


if __name__ == "__main__":
    main()
