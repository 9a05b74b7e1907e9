"""Peak memory of ``gscorecam explain`` on one large photo with many prompts.

Each case runs the command in a fresh process (figure and ``--save-maps``) and reads that
process's peak resident set size from the kernel (``os.wait4``'s ``ru_maxrss``)::

    nice -n 10 python benchmarks/memory.py --side 9000 --prompts 16 \\
        --out benchmarks/results/memory-cpu.md

The photo is a smooth synthetic one (written as JPEG, so the file stays small); its content
does not change the memory, which depends on its pixels and the number of prompts.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
from PIL import Image
from report import emit

PROMPTS = ("a red circle", "a blue square", "a green triangle", "a yellow star")


def write_photo(path: Path, width: int, height: int) -> None:
    """Smooth colour ramps, built one band of rows at a time (the photo is large)."""
    photo = Image.new("RGB", (width, height))
    band = max(1, 2_000_000 // width)
    cols = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    for top in range(0, height, band):
        rows = np.arange(top, min(top + band, height), dtype=np.float32)[:, None]
        red = np.broadcast_to(cols, (len(rows), width))
        green = np.broadcast_to(255 * rows / height, (len(rows), width))
        blue = (red + green) / 2
        pixels = np.stack([red, green, blue], axis=-1).astype(np.uint8)
        photo.paste(Image.fromarray(pixels), (0, top))
    photo.save(path, quality=90)


def measure(argv: list[str]) -> tuple[float, float, int]:
    """Peak RSS (MB) and wall seconds of one command, and its exit status."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode(errors="replace")[-2000:])
    return usage.ru_maxrss / 1024, seconds, process.returncode  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=9000, help="photo width and height")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--model", default="shapes-rn")
    parser.add_argument("--method", default="gscorecam")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} {i}" for i in range(args.prompts)]
    with tempfile.TemporaryDirectory() as work:
        photo = Path(work) / "large.jpg"
        write_photo(photo, args.side, args.side)
        argv = [sys.executable, "-m", "captum_gscorecam", "explain", str(photo)]
        argv += [arg for prompt in prompts for arg in ("--prompt", prompt)]
        argv += ["--out", str(Path(work) / "out"), "--save-maps", str(Path(work) / "maps")]
        argv += ["--model", args.model, "--method", args.method, "--device", "cpu"]
        peak, seconds, status = measure(argv)
        maps = Path(work) / "maps" / "large.npy"
        saved = maps.stat().st_size / 2**20 if maps.exists() else 0.0
    megapixels = args.side * args.side / 1e6
    lines = [
        f"# Peak memory of gscorecam explain ({date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})",
        "",
        f"`{' '.join(['python', *sys.argv])}`: `gscorecam explain` on one photo with every "
        "prompt, a figure and `--save-maps`, in a fresh process; peak RSS from `os.wait4`.",
        "",
        "| photo | prompts | model | method | peak RSS (MB) | wall (s) | maps .npy (MB) | exit |",
        "|---|---|---|---|---|---|---|---|",
        f"| {args.side} x {args.side} ({megapixels:.0f} MP) | {args.prompts} | {args.model} | "
        f"{args.method} | {peak:.0f} | {seconds:.0f} | {saved:.0f} | {status} |",
    ]
    emit("\n".join(lines), str(args.out) if args.out else None)


if __name__ == "__main__":
    main()
