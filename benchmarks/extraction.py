"""Dataset extraction (``gscorecam explain --dataset``) measured on CPU: photos/s and CPU s/photo
per model, 1 vs 2 ranks and with/without decode workers; RSS at photo 100 vs the last; the time
to resume a run killed halfway; COCO AP / AP50 of the exported boxes on shapes scenes.

Every run is a subprocess (``python -m captum_gscorecam explain --dataset ...`` or ``torchrun``);
CPU seconds are the children's user + system time (``getrusage``), so a loaded machine shows in
the wall time, not in the CPU time. Writes Markdown to ``--out``.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/extraction.py \
        --out benchmarks/results/extraction-cpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from captum_gscorecam.shapes.coco import export_coco

FIRST = 10_000_000
CATEGORIES = "all"


def cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def explain(tree: Path, out: Path, *options: str, ranks: int = 1) -> list[str]:
    head = [sys.executable, "-m", "captum_gscorecam"]
    if ranks > 1:
        head = ["torchrun", "--nproc-per-node", str(ranks), "-m", "captum_gscorecam"]
    return [*head, "explain", "--dataset", str(tree), "--out", str(out), "--device", "cpu",
            *options]  # fmt: skip


def timed(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of a command (which must succeed)."""
    cpu, wall = cpu_children(), time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True)
    return time.perf_counter() - wall, cpu_children() - cpu


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def throughput(root: Path, count: int) -> list[str]:
    tree = root / "tp" / "images"
    if not tree.exists():
        export_coco(root / "tp", range(FIRST, FIRST + count), size=224)
    rows = ["| model | method | ranks | workers | photos | wall s | photos/s | CPU s/photo |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    plans = [
        ("shapes-rn", [], 1, 0), ("shapes-rn", [], 1, 1), ("shapes-rn", [], 2, 0),
        ("shapes-rn", [], 2, 1), ("shapes-vit", [], 1, 1), ("shapes-vit", [], 2, 1),
        ("RN50", [], 1, 1),
    ]  # fmt: skip
    for i, (model, extra, ranks, workers) in enumerate(plans):
        out = root / f"tp-out-{i}"
        photos = count if model != "RN50" else max(2, count // 4)
        prompts = ("--prompt", "red circle", "--prompt", "blue square")
        argv = explain(tree, out, "--model", model, *extra, *prompts, "--workers", str(workers),
                       ranks=ranks)  # fmt: skip
        if photos < count:
            listed = root / "rn50.txt"
            names = sorted(p.name for p in tree.iterdir())[:photos]
            listed.write_text("".join(f"tp/images/{n}\n" for n in names))
            argv[argv.index(str(tree))] = "--list"
            argv.insert(argv.index("--list") + 1, str(listed))
        wall, cpu = timed(argv)
        rows.append(f"| {model} | gscorecam | {ranks} | {workers} | {photos} | {wall:.1f} | "
                    f"{photos / wall:.2f} | {cpu / photos:.2f} |")  # fmt: skip
        print(rows[-1], flush=True)
    return rows


def memory(root: Path, count: int) -> list[str]:
    """RSS of one process at photo 100 and at the last, method uniform (the pipeline alone)."""
    export_coco(root / "mem", range(FIRST, FIRST + count), size=224)
    out = root / "mem-out"
    argv = explain(root / "mem" / "images", out, "--model", "shapes-rn", "--method", "uniform",
                   "--prompt", "red circle", "--workers", "1")  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard, seen = out / "parts" / "index.rank0.jsonl", {}
    while process.poll() is None:
        done = shard.read_bytes().count(b"\n") if shard.exists() else 0
        rss = rss_kib(process.pid)
        if rss is not None:
            if done >= 100 and 100 not in seen:
                seen[100] = rss
            if done >= count - 20:
                seen[count] = rss
        time.sleep(0.2)
    line = f"| {count} | {seen.get(100, 0) / 1024:.0f} | {seen.get(count, 0) / 1024:.0f} |"
    print(line, flush=True)
    return ["| photos | RSS at photo 100 (MiB) | RSS near the last (MiB) |", "|---|---|---|", line]


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def resume(root: Path, count: int) -> list[str]:
    """Kill a run at 50% (SIGKILL), then time the rerun that finishes it and a full run."""
    tree = root / "tp" / "images"
    full = root / "resume-full"
    args = ("--model", "shapes-rn", "--prompt", "red circle", "--workers", "1")
    wall_full, _ = timed(explain(tree, full, *args))
    out = root / "resume-out"
    process = subprocess.Popen(explain(tree, out, *args), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    shard = out / "parts" / "index.rank0.jsonl"
    while process.poll() is None:
        if shard.exists() and shard.read_bytes().count(b"\n") >= count // 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    process.wait()
    wall, _ = timed(explain(tree, out, *args))
    same = all(
        (out / p.relative_to(full)).read_bytes() == p.read_bytes()
        for p in (full / "maps").rglob("*.npy")
    )
    line = f"| {count} | {wall_full:.1f} | {wall:.1f} | {same} |"
    print(line, flush=True)
    return ["| photos | full run wall s | resume after a kill at 50%, wall s | maps equal |",
            "|---|---|---|---|", line]  # fmt: skip


def coco_ap(root: Path, count: int) -> list[str]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = export_coco(root / "ap", range(FIRST + 1000, FIRST + 1000 + count), size=224)
    rows = ["| model | method | scenes | AP | AP50 | CPU s/photo |", "|---|---|---|---|---|---|"]
    plans = [("shapes-rn", "gscorecam"), ("shapes-rn", "scorecam"), ("shapes-rn", "gradcam"),
             ("shapes-vit", "hilacam")]  # fmt: skip
    for model, method in plans:
        out = root / f"ap-{model}-{method}"
        argv = [sys.executable, "-m", "captum_gscorecam", "explain", "--coco", str(annotations),
                "--out", str(out), "--model", model, "--method", method, "--device", "cpu",
                "--workers", "1", "--categories", CATEGORIES]  # fmt: skip
        _, cpu = timed(argv)
        truth = COCO(str(annotations))
        evaluation = COCOeval(truth, truth.loadRes(str(out / "boxes.json")), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        ap, ap50 = evaluation.stats[:2]
        rows.append(f"| {model} | {method} | {count} | {ap:.3f} | {ap50:.3f} | {cpu / count:.2f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", type=int, default=16, help="throughput and resume photos")
    parser.add_argument("--memory-photos", type=int, default=2000)
    parser.add_argument("--ap-scenes", type=int, default=20)
    parser.add_argument("--parts", default="ap,throughput,resume,memory")
    parser.add_argument(
        "--categories", choices=["all", "present"], default="all", help="COCO prompts per photo"
    )
    args = parser.parse_args()
    global CATEGORIES
    CATEGORIES = args.categories
    root = Path(tempfile.mkdtemp(prefix="extraction-bench-"))
    text = [
        "# Dataset extraction on CPU",
        "",
        f"Command: `OMP_NUM_THREADS=1 nice -n 10 python benchmarks/extraction.py --out {args.out} "
        f"--photos {args.photos} --memory-photos {args.memory_photos} --ap-scenes "
        f"{args.ap_scenes} --parts {args.parts} --categories {args.categories}`",
        "",
        f"Machine: {os.cpu_count()} cores shared with other jobs; load average at the start "
        f"{load()}. CPU s/photo counts the processes' own time; wall time includes waiting "
        "for the shared cores.",
    ]
    parts = {"ap": (coco_ap, args.ap_scenes), "throughput": (throughput, args.photos),
             "resume": (resume, args.photos), "memory": (memory, args.memory_photos)}  # fmt: skip
    titles = {
        "ap": f"COCO box AP on shapes scenes (prompts: {args.categories} categories; COCOeval)",
        "throughput": "Throughput at 224 px (two prompts; RN50 with random weights)",
        "resume": "Resume after a kill at 50% (shapes-rn, one prompt)",
        "memory": "Memory over a long run (method uniform: decoding, scoring, writing)",
    }
    for name in args.parts.split(","):
        function, count = parts[name]
        text += ["", f"## {titles[name]}", "", *function(root, count)]
        text.append(f"\nload average after: {load()}")
        args.out.write_text("\n".join(text) + "\n")
    print(json.dumps({"wrote": str(args.out), "scratch": str(root)}))


if __name__ == "__main__":
    main()
