"""How fast each JPEG decoder, and the worker's staging, go alone on this machine: what caps the stage thread.

Why a script of its own (issue 14): on an H200 the compiled forward ran 489 img/s alone, but the worker's steady state
stayed at 369-374 img/s, its single stage thread (decode on the JPEG engine + letterbox) busy ~94 ms a batch of 32.
The worker's summary splits that time (``stage_decode_call_s`` and the GPU seconds), but only the decoders run alone
say how far each can go here, and so which of the worker's options (``--stage-threads``, ``--cpu-decode-share``,
``--stream-priority``) can lift it and by how much: the engine with one to four decoders of its own, nvJPEG's CUDA
backend, PIL on N cores (what the CPU-decoded share draws on), and the worker's own fetch + stage path without the
forward pass, alone and beside a loop of forward passes (the contention the worker lives with).

Variants, comma-separated, each ``KIND:THREADS`` with optional ``+load``, ``+high`` and ``+shareF``:

* ``pil:N``     PIL decode as MegaDetector decodes (``decode_image_and_time``) on N threads; runs on a CPU too.
* ``engine:N``  the GPU's hardware JPEG engine (nvImageCodec, batches of ``--batch``) on N threads, each with a
  decoder and CUDA stream of its own (as ``--stage-threads N`` gives the worker).
* ``nvjpeg:N``  ``torchvision.io.decode_jpeg`` batched on CUDA (nvJPEG's CUDA backend, on the SMs) on N threads.
* ``stage:N``   the worker's own path without the forward pass: ``--workers`` fetch threads prepare each image
  (``CudaStages.prepare``: the JPEG header, or the exact decode and upload of the CPU share) and N stage threads
  decode and letterbox batches (``CudaStages.stage``, the engine first where it works).
* ``+load``     a loop of fp16 forward passes (batch ``--batch``, 1280x960) runs beside the variant on the default
  stream, as the worker's main thread runs them; its img/s during the variant is reported as ``load_img_s``.
* ``+high``     the variant's streams at high CUDA priority (``--stream-priority high``).
* ``+shareF``   ``stage`` only: the fraction F of the JPEGs decoded on the fetch threads (``--cpu-decode-share F``).
* ``+bN``       batches of N images instead of ``--batch`` (not ``pil``; the forward load keeps ``--batch``): whether
  the stage's time is per batch more than per image, so that larger batches would lift it.
* ``+pinned``   ``engine`` only: the JPEGs handed over in page-locked host memory (copied before the clock starts)
  instead of as Python bytes, which nvJPEG copies into pinned memory itself inside the decode call.

Every image of ``--count`` is decoded once per variant; img/s = images / wall seconds of the variant, the GPU's work
waited for. ``call_ms``: the mean wall milliseconds of one batched decode call (engine, nvjpeg) or one ``stage``
call, on its thread. Prints a line a variant and writes the record to ``--record`` (JSON).

Usage: python bench/decode_rates.py [--images-dir DIR | --images N] [--count 1024] [--batch 32] [--workers 16]
    [--variants ...] [--arch yolov5x6] [--workdir W] [--record FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # run as a script from anywhere

KINDS = ("pil", "engine", "nvjpeg", "stage")
# Most telling first, so that a run cut by its time limit still answers the main questions: the engine's own rate,
# the staging beside the forward pass at each priority, the second thread, the CPU share, then the rest.
CUDA_DEFAULT = ("engine:1,stage:1+load,stage:1+load+high,engine:2,stage:2+load,stage:2+load+high,"
                "stage:2+load+share0.3,engine:1+pinned,engine:1+b64,stage:1+load+b64,pil:16,stage:1,engine:1+load,"
                "engine:1+load+high,engine:4,nvjpeg:1,pil:8,stage:2,stage:1+share0.3")
CPU_DEFAULT = "pil:1,pil:2"


@dataclass(frozen=True, slots=True)
class Variant:
    """One measured configuration (see the module doc for the notation)."""

    kind: str
    threads: int
    load: bool = False
    high: bool = False
    share: float = 0.0
    pinned: bool = False
    batch: int | None = None  # None: the run's --batch

    @property
    def label(self) -> str:
        return (f"{self.kind}:{self.threads}" + ("+load" if self.load else "") + ("+high" if self.high else "")
                + (f"+share{self.share:g}" if self.share else "") + ("+pinned" if self.pinned else "")
                + (f"+b{self.batch}" if self.batch else ""))


def parse_variants(text: str) -> list[Variant]:
    """``KIND:THREADS[+load][+high][+shareF]`` items, comma-separated; ValueError naming the item otherwise."""
    out = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        head, *mods = item.split("+")
        kind, _, threads = head.partition(":")
        if kind not in KINDS or not threads.isdigit() or not 1 <= int(threads) <= 64:
            raise ValueError(f"variant {item!r}: expected KIND:THREADS with KIND one of {', '.join(KINDS)} and "
                             "1-64 threads")
        load = high = pinned = False
        share = 0.0
        batch: int | None = None
        for mod in mods:
            if mod == "load":
                load = True
            elif mod == "high":
                high = True
            elif mod == "pinned" and kind == "engine":
                pinned = True
            elif mod.startswith("b") and mod[1:].isdigit() and kind != "pil" and 1 <= int(mod[1:]) <= 256:
                batch = int(mod[1:])
            elif mod.startswith("share") and kind == "stage":
                try:
                    share = float(mod[len("share"):])
                except ValueError:
                    share = -1.0
                if not 0.0 <= share <= 1.0:
                    raise ValueError(f"variant {item!r}: +shareF needs a fraction from 0 to 1")
            else:
                raise ValueError(f"variant {item!r}: unknown modifier {mod!r} (+load, +high, +shareF for stage, "
                                 "+pinned for engine, +bN for a batch of N, 1-256, except pil)")
        out.append(Variant(kind, int(threads), load, high, share, pinned, batch))
    return out


def in_batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_on_threads(jobs: list[Any], threads: int, work: Callable[[int, Any], object]) -> float:
    """Run ``work(thread_index, job)`` for every job on ``threads`` threads (each takes the next job when free);
    returns the wall seconds. The first exception of any thread is raised here after all have stopped."""
    todo: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    errors: list[BaseException] = []

    def loop(index: int) -> None:
        while not errors:
            try:
                job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                work(index, job)
            except BaseException as exc:  # noqa: BLE001 - reported by the caller
                errors.append(exc)

    pool = [threading.Thread(target=loop, args=(i,), name=f"decode-{i}") for i in range(threads)]
    t = time.monotonic()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    seconds = time.monotonic() - t
    if errors:
        raise errors[0]
    return seconds


class CallClock:
    """Wall seconds of the batched calls, summed over threads (their mean is ``call_ms``)."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self._lock = threading.Lock()

        self.refused = 0  # images a decoder returned None for (the worker's fallback takes them), or that failed

    def add(self, seconds: float, refused: int = 0) -> None:
        with self._lock:
            self.calls, self.seconds, self.refused = self.calls + 1, self.seconds + seconds, self.refused + refused

    def mean_ms(self) -> float | None:
        return round(1000 * self.seconds / self.calls, 2) if self.calls else None


def pil_rate(datas: list[bytes], threads: int) -> dict[str, Any]:
    from gpu_batch.worker.preprocess import decode_image_and_time

    seconds = run_on_threads(datas, threads, lambda _i, data: decode_image_and_time(data))
    return {"img_s": round(len(datas) / seconds, 2), "seconds": round(seconds, 3)}


class ForwardLoad:
    """Forward passes back to back on the default stream, on a thread of their own, until stopped; counts the
    passes that completed (each waited for two passes later, so the GPU always has the next queued)."""

    def __init__(self, network: Any, x: Any) -> None:
        self.network, self.x, self.batch = network, x, int(x.shape[0])
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forward-load", daemon=True)

    def _run(self) -> None:
        import torch

        marks: list[Any] = []
        with torch.inference_mode():
            while not self._stop.is_set():
                self.network(self.x)
                event = torch.cuda.Event()  # type: ignore[no-untyped-call]
                event.record()
                marks.append(event)
                if len(marks) > 2:
                    marks.pop(0).synchronize()
                    self.done += 1
        for event in marks:
            event.synchronize()

    def __enter__(self) -> ForwardLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Gpu:
    """What the CUDA variants share: the model, its detector, the hardware decoder (or why there is none)."""

    def __init__(self, checkpoint: Path, batch: int) -> None:
        import torch

        from gpu_batch.worker import hwdecode
        from gpu_batch.worker.detector import Detector
        from gpu_batch.worker.loader import load_model

        torch.backends.cudnn.benchmark = True  # the worker tunes on shards of 10,000 images and more
        self.model = load_model(checkpoint, device="cuda")
        self.detector = Detector(self.model, 0.005)
        self.hw, self.hw_reason = hwdecode.create_hw_decoder(torch.cuda.current_device())
        height = self.model.image_size * 3 // 4 // self.model.stride * self.model.stride  # 2048x1536 -> 1280x960
        self.x = torch.rand(batch, 3, height, self.model.image_size, device="cuda",
                            dtype=torch.float16 if self.model.half else torch.float32
                            ).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            for _ in range(3):  # cuDNN's tuning for the load's shape, before anything is timed
                self.model.network(self.x)
        torch.cuda.synchronize()

    def forward_alone(self, seconds: float = 3.0) -> float:
        with ForwardLoad(self.model.network, self.x) as load:
            time.sleep(seconds)
            done = load.done
        return done * load.batch / seconds

    def stream(self, high: bool) -> Any:
        import torch

        return torch.cuda.Stream(priority=-1 if high else 0)  # type: ignore[no-untyped-call]


def pinned_copies(datas: list[bytes]) -> list[Any]:
    """Each JPEG in page-locked host memory (torch's pinned allocator), as NumPy arrays over it: what the fetch threads
    could hand the engine instead of Python bytes, which nvJPEG must first copy into pinned memory itself."""
    import torch

    return [torch.frombuffer(bytearray(d), dtype=torch.uint8).pin_memory().numpy() for d in datas]


def engine_rate(gpu: Gpu, datas: list[bytes], v: Variant, batch: int) -> dict[str, Any]:
    if gpu.hw is None:
        return {"skipped": f"no hardware JPEG decoder: {gpu.hw_reason}"}
    if v.pinned:  # copied before the clock starts: in the worker the fetch threads would do it, beside the decode
        datas = pinned_copies(datas)
    hw = gpu.hw
    decoders = [hw if i == 0 else hw.sibling(i) for i in range(v.threads)]
    streams = [gpu.stream(v.high) for _ in range(v.threads)]
    clock = CallClock()

    def work(i: int, jobs: list[bytes]) -> None:
        t = time.monotonic()
        outs = decoders[i].decode(jobs, streams[i])
        clock.add(time.monotonic() - t, sum(out is None for out in outs))
        streams[i].synchronize()

    seconds = run_on_threads(in_batches(datas, batch), v.threads, work)
    return {"img_s": round(len(datas) / seconds, 2), "seconds": round(seconds, 3), "call_ms": clock.mean_ms(),
            "refused": clock.refused}


def nvjpeg_rate(gpu: Gpu, datas: list[bytes], v: Variant, batch: int) -> dict[str, Any]:
    import torch

    from gpu_batch.worker.devices import decode_jpeg_rgb

    streams = [gpu.stream(v.high) for _ in range(v.threads)]
    clock = CallClock()

    def work(i: int, jobs: list[bytes]) -> None:
        tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in jobs]
        with torch.cuda.stream(streams[i]):
            t = time.monotonic()
            decode_jpeg_rgb(tensors, gpu.model.device)
            clock.add(time.monotonic() - t)
        streams[i].synchronize()

    seconds = run_on_threads(in_batches(datas, batch), v.threads, work)
    return {"img_s": round(len(datas) / seconds, 2), "seconds": round(seconds, 3), "call_ms": clock.mean_ms()}


class MemorySource:
    """The images, in memory: the fetch threads' reads cost nothing, as the bench wants only the decode."""

    def __init__(self, datas: dict[str, bytes]) -> None:
        self.datas = datas

    def fetch(self, name: str) -> bytes:
        return self.datas[name]


def stage_rate(gpu: Gpu, datas: list[bytes], v: Variant, batch: int, workers: int) -> dict[str, Any]:
    """The worker's fetch + stage path: prepare on ``workers`` threads, stage full batches on ``v.threads``."""
    from gpu_batch.worker.devices import CudaStages

    stages = CudaStages(gpu.model, gpu.detector, gpu.hw, v.threads, v.share, "high" if v.high else "normal")
    source = MemorySource({f"{i:06d}.jpg": d for i, d in enumerate(datas)})
    names = sorted(source.datas)
    batches: queue.Queue[Any] = queue.Queue(maxsize=2 * v.threads)  # as bounded as the worker's prefetch
    clock = CallClock()

    def produce() -> None:
        try:  # every image submitted at once, as the worker keeps its fetch threads busy ahead of the stage
            with ThreadPoolExecutor(max_workers=workers) as pool:
                ready: list[Any] = []
                for item in pool.map(lambda n: stages.prepare(source, n), names):
                    ready.append(item)
                    if len(ready) == batch:
                        batches.put(ready)
                        ready = []
                if ready:
                    batches.put(ready)
        finally:  # the stage threads stop whatever happened here
            for _ in range(v.threads):
                batches.put(None)

    def consume(_index: int) -> None:
        in_flight: list[Any] = []  # the stage thread does not wait for its GPU work; two batches may be queued
        error: BaseException | None = None
        while (items := batches.get()) is not None:
            if error is not None:
                continue  # still drained, so that the producer never waits on a full queue for a thread that failed
            try:
                t = time.monotonic()
                staged = stages.stage(items, batch)
                clock.add(time.monotonic() - t, len(staged.failed))
                in_flight.append(staged)
                if len(in_flight) > 2:
                    in_flight.pop(0).ready.synchronize()
            except BaseException as exc:  # noqa: BLE001 - raised once the queue is drained
                error = exc
        for staged in in_flight:
            staged.ready.synchronize()
        if error is not None:
            raise error

    producer = threading.Thread(target=produce, name="prepare")
    t = time.monotonic()
    producer.start()
    run_on_threads(list(range(v.threads)), v.threads, lambda i, _job: consume(i))
    producer.join()
    seconds = time.monotonic() - t
    return {"img_s": round(len(datas) / seconds, 2), "seconds": round(seconds, 3), "call_ms": clock.mean_ms(),
            "failed": clock.refused, "decoded_by": stages.decoded_by.counts(), **stages.stage_times.snapshot()}


def measure(v: Variant, datas: list[bytes], batch: int, workers: int, gpu: Gpu | None) -> dict[str, Any]:
    """One variant's figures (``skipped`` with the reason where this machine cannot run it)."""
    if v.kind == "pil" and not v.load:
        return pil_rate(datas, v.threads)
    if gpu is None:
        return {"skipped": "needs CUDA (this machine has none)"}
    batch = v.batch or batch
    run: Callable[[], dict[str, Any]]
    if v.kind == "pil":
        run = lambda: pil_rate(datas, v.threads)  # noqa: E731
    elif v.kind == "engine":
        run = lambda: engine_rate(gpu, datas, v, batch)  # noqa: E731
    elif v.kind == "nvjpeg":
        run = lambda: nvjpeg_rate(gpu, datas, v, batch)  # noqa: E731
    else:
        run = lambda: stage_rate(gpu, datas, v, batch, workers)  # noqa: E731
    if not v.load:
        return run()
    with ForwardLoad(gpu.model.network, gpu.x) as load:
        before = load.done
        figures = run()
        passes = load.done - before
    if "seconds" in figures:
        figures["load_img_s"] = round(passes * load.batch / figures["seconds"], 2)
    return figures


def read_images(folder: Path, count: int) -> list[bytes]:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg"))[:count]
    if not files:
        raise SystemExit(f"no JPEGs in {folder}: give --images N to write the benchmark's own")
    return [p.read_bytes() for p in files]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images-dir", help="JPEGs to decode (e.g. bench/worker_throughput.py's WORKDIR/images)")
    p.add_argument("--images", type=int, default=0,
                   help="write this many of worker_throughput's 2048x1536 benchmark JPEGs into --workdir first")
    p.add_argument("--count", type=int, default=1024, help="images decoded per variant (the first of the folder)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 4, help="fetch threads of the stage variants")
    p.add_argument("--variants", default=None, help=f"default on CUDA: {CUDA_DEFAULT}; on a CPU: {CPU_DEFAULT}")
    p.add_argument("--arch", default="yolov5x6", help="the random-weight checkpoint of the load and stage variants")
    p.add_argument("--workdir", default=None)
    p.add_argument("--record", default=None, help="where to write the JSON record (default: none)")
    args = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    try:
        variants = parse_variants(args.variants or (CUDA_DEFAULT if cuda else CPU_DEFAULT))
    except ValueError as exc:
        p.error(str(exc))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="trapbatch-decode-"))
    folder = Path(args.images_dir) if args.images_dir else work / "images"
    if args.images:
        from bench.worker_throughput import make_images

        make_images(folder, args.images)
    datas = read_images(folder, args.count)
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    size_mb = sum(map(len, datas)) / len(datas) / 1e6
    print(f"{len(datas)} JPEGs of ~{size_mb:.2f} MB from {folder}; device {name}; {os.cpu_count()} cores")
    gpu = None
    record: dict[str, Any] = {"device": name, "cpu_count": os.cpu_count(), "torch": torch.__version__,
                              "images": len(datas), "mean_jpeg_mb": round(size_mb, 3), "batch": args.batch,
                              "variants": {}}
    if cuda and any(v.kind != "pil" or v.load for v in variants):
        from gpu_batch.worker.make_test_checkpoint import write_test_checkpoint

        # worker_throughput.py's own file in the same --workdir when it is there: the same seed, the same network,
        # and a YOLOv5x6 takes tens of seconds to build and calibrate
        checkpoint = work / f"md_bench_{args.arch}.pt"
        if not checkpoint.exists():
            write_test_checkpoint(checkpoint, arch=args.arch)
        gpu = Gpu(checkpoint, args.batch)
        record["hw_decoder"] = "available" if gpu.hw is not None else gpu.hw_reason
        record["forward_alone_img_s"] = round(gpu.forward_alone(), 2)
        print(f"forward alone (fp16, batch {args.batch}): {record['forward_alone_img_s']} img/s; "
              f"hardware decoder: {record['hw_decoder']}")
    for v in variants:
        try:
            figures = measure(v, datas, args.batch, args.workers, gpu)
        except Exception as exc:  # noqa: BLE001 - one variant failing is a finding, not the end of the run
            figures = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        record["variants"][v.label] = figures
        print(f"{v.label:28s} " + ", ".join(f"{k} {val}" for k, val in figures.items()), flush=True)
        if args.record:
            Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
    if args.record:
        print(f"wrote {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
