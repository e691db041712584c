"""What telling a photo cut short costs the worker: ``formats.jpeg_end.jpeg_cut_short`` per image, by kind of file.

    python bench/cut_short.py [--width 2048 --height 1536] [--runs 500]

Kinds: a whole JPEG (the common case: the tail is the end marker), one padded with zeros after it (a card's
preallocated file), one with 3 MB of data after it (a phone's motion-photo video, a maker's trailer), and one cut
at 90 % (the damaged photo itself). The worker calls it once per image on its staging thread, beside a decode of
milliseconds; at 400 images/s a check of 0.1 ms is 4 % of one core.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import timeit
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpu_batch.formats.jpeg_end import jpeg_cut_short  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    args = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    args.add_argument("--width", type=int, default=2048)
    args.add_argument("--height", type=int, default=1536)
    args.add_argument("--runs", type=int, default=500)
    opts = args.parse_args(argv)
    pixels = (np.random.default_rng(0).random((opts.height, opts.width, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    whole = buffer.getvalue()
    kinds = {"whole": whole, "zero-padded (4 KiB)": whole + b"\0" * 4096,
             "trailer (3 MB after the end marker)": whole + os.urandom(3_000_000),
             "cut short at 90 %": whole[: len(whole) * 9 // 10]}
    print(f"JPEG of {opts.width}x{opts.height}, {len(whole):,} bytes; {opts.runs} runs each")
    for name, data in kinds.items():
        seconds = timeit.timeit(lambda: jpeg_cut_short(data), number=opts.runs) / opts.runs
        print(f"  {name:38s} cut short: {str(jpeg_cut_short(data)):5s}  {seconds * 1e6:9.1f} us an image")


if __name__ == "__main__":
    main()
