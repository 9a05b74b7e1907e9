"""Dataset extraction (``gscorecam explain --dataset``) measured on CPU.

Four parts, each a section of the Markdown file ``--out`` (a part that is rerun replaces its
own section and keeps the others, so the parts can be measured one at a time):

- ``throughput``: photos/s and CPU s/photo per model at 224 px, 1 vs 2 ranks (torchrun), with
  and without a decode worker;
- ``memory``: the resident memory of the process at photo 100 and at the last of a long run;
- ``resume``: a run killed (SIGKILL) halfway, then rerun, against an uninterrupted run: the
  time, and whether the files are the same;
- ``ap``: COCO AP / AP50 of the exported ``boxes.json`` scored by pycocotools against the
  shapes annotations, per model and method, with the placement of the boxes (IoU with the
  object, how much larger they are) and the AP of boxes cut from the same maps at fixed
  thresholds instead of Otsu's.

Every run is a subprocess (``python -m captum_gscorecam explain ...`` or ``torchrun``) with one
CPU thread per process (``--threads 1``). Its process tree is read from ``/proc`` while it runs,
so the figures are the steady state: from the moment each rank has finished a photo to the
last photo, the wall time and the CPU time (user + system) of every process of the run,
decode workers included. Model loading (the startup) is reported apart.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/extraction.py \
        --out benchmarks/results/extraction-cpu.md --parts throughput
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from captum_gscorecam.shapes.coco import export_coco

FIRST = 10_000_000  # the seeds of the scenes; the AP scenes start FIRST + 1000
TEMPLATE = "a {}"  # the shapes models' prompts: "a red circle"
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- running and watching


def explain(inputs: list[str], out: Path, *options: str, ranks: int = 1) -> list[str]:
    head = [sys.executable, "-m", "captum_gscorecam"]
    if ranks > 1:
        head = ["torchrun", "--standalone", "--nproc-per-node", str(ranks), "-m",
                "captum_gscorecam"]  # fmt: skip
    return [*head, "explain", *inputs, "--out", str(out), "--device", "cpu", "--threads", "1",
            "--template", TEMPLATE, *options]  # fmt: skip


@dataclass
class Sample:
    seconds: float  # since the start
    done: int  # lines in the index shards
    cpu: float  # user + system seconds of the whole process tree so far
    rss: dict[int, int]  # pid: resident bytes, the live processes of the tree


@dataclass
class Watched:
    pid: int  # the command's own process
    wall: float
    cpu: float  # the children's rusage: every process of the run, waited for
    samples: list[Sample] = field(default_factory=list)

    def steady(self, photos: int, ranks: int) -> tuple[float, float, float, float]:
        """``(startup wall, startup CPU, photos/s, CPU s/photo)`` from the first sample where
        every rank has finished a photo to the first where all are done.
        """
        begin = next(s for s in self.samples if s.done >= ranks)
        end = next(s for s in self.samples if s.done >= photos)
        count = end.done - begin.done
        return (
            begin.seconds,
            begin.cpu,
            count / (end.seconds - begin.seconds),
            (end.cpu - begin.cpu) / count,
        )


def _stat(pid: int) -> tuple[int, float, int] | None:
    """``(parent, CPU seconds with the waited-for children, resident bytes)`` of a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / TICKS, int(fields[21]) * PAGE


def _tree(root: int) -> tuple[float, dict[int, int]]:
    """CPU seconds and resident bytes per process of ``root`` and its descendants."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = stat
    members, frontier = set(), [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in members:
            members.add(pid)
            frontier += [p for p, s in stats.items() if s[0] == pid]
    return sum(stats[p][1] for p in members), {p: stats[p][2] for p in members}


def _done(out: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (out / "parts").glob("index.rank*.jsonl"))


def watch(argv: list[str], out: Path, every: float = 0.1, kill_at: int | None = None) -> Watched:
    """Run ``argv`` to its end (or SIGKILL its process group once ``kill_at`` photos are done),
    sampling its process tree every ``every`` seconds.
    """
    began, cpu = time.perf_counter(), _children_cpu()
    # A file, not a pipe: the progress bars would fill a pipe nobody reads until the end.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=errors)  # fmt: skip
        samples = []
        while process.poll() is None:
            tree_cpu, rss = _tree(process.pid)
            samples.append(Sample(time.perf_counter() - began, _done(out), tree_cpu, rss))
            if kill_at is not None and samples[-1].done >= kill_at:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(every)
        process.wait()
        if kill_at is None and process.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"{' '.join(argv)} failed:\n{errors.read().decode()[-2000:]}")
    return Watched(process.pid, time.perf_counter() - began, _children_cpu() - cpu, samples)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def load() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def scenes(root: Path, name: str, count: int, first: int = FIRST) -> Path:
    """``count`` shapes scenes at 224 px as a COCO dataset; the annotation file's path."""
    annotations = root / name / "annotations" / "instances.json"
    if not annotations.exists():
        export_coco(root / name, range(first, first + count), size=224)
    return annotations


# ---------------------------------------------------------------- throughput


PLANS = {
    "shapes-rn": [(1, 0), (1, 1), (2, 0), (2, 1)],
    "shapes-vit": [(1, 0), (1, 1), (2, 1)],
    "RN50": [(1, 0), (1, 1), (2, 1)],
}


def throughput(root: Path, args: argparse.Namespace) -> list[str]:
    rows = [
        "| model | method | ranks | decode workers | photos | startup wall s | startup CPU s "
        "| photos/s | CPU s/photo | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    models = args.models.split(",")
    for model in models:
        count = args.rn50_photos if model == "RN50" else args.photos
        tree = scenes(root, f"tp{count}", count).parent.parent / "images"
        for ranks, workers in PLANS[model]:
            out = root / f"tp-{model}-{ranks}-{workers}"
            argv = explain([str(tree), "--dataset"], out, "--model", model, "--method",
                           "gscorecam", "--prompt", "red circle", "--prompt", "blue square",
                           "--workers", str(workers), ranks=ranks)  # fmt: skip
            before = load()
            run = watch(argv, out)
            startup, startup_cpu, rate, cpu = run.steady(count, ranks)
            rows.append(f"| {model} | gscorecam | {ranks} | {workers} | {count} | {startup:.1f} "
                        f"| {startup_cpu:.1f} | {rate:.3f} | {cpu:.2f} | {before} |")  # fmt: skip
            print(rows[-1], flush=True)
            shutil.rmtree(out)
    return [
        "gScoreCAM at its default k (shapes towers: 10% of the channels of a convolutional layer, "
        "50% of a ViT layer's; RN50: 10% of 2048), two prompts per photo (`red circle`, "
        "`blue square`), 224 px shapes scenes, `--threads 1` per process, float32 maps, "
        "`--precision auto` (on a CPU with bf16 arithmetic, as this one, the masked passes in "
        "bf16). "
        "RN50 is open_clip's architecture with random weights (no download here): its cost is "
        "the real model's, its maps mean nothing. photos/s and CPU s/photo are the steady "
        "state (after each rank's first photo); the startup (imports, model, first photo) is "
        "apart. CPU counts every process of the run (torchrun, ranks, decode workers). Load: "
        "the 1/5/15-minute load average when the row started.",
        "",
        *rows,
    ]


# ---------------------------------------------------------------- memory


def memory(root: Path, args: argparse.Namespace) -> list[str]:
    count = args.memory_photos
    tree = scenes(root, f"mem{count}", count).parent.parent / "images"
    out = root / "mem-out"
    argv = explain([str(tree), "--dataset"], out, "--model", "shapes-rn", "--method",
                   "gradcam", "--prompt", "red circle", "--workers", "1", "--dtype",
                   "float16")  # fmt: skip
    before = load()
    run = watch(argv, out, every=0.5)
    marks = sorted({100, count // 4, count // 2, 3 * count // 4, count})
    rows = ["| photo | RSS of the process (MiB) | RSS of the decode worker (MiB) |",
            "|---|---|---|"]  # fmt: skip
    for mark in marks:
        sample = next(s for s in run.samples if s.done >= mark)
        worker = [b for p, b in sample.rss.items() if p != run.pid]
        shown = f"{max(worker) / 2**20:.0f}" if worker else "(exited)"
        rows.append(f"| {sample.done} | {sample.rss[run.pid] / 2**20:.0f} | {shown} |")
        print(rows[-1], flush=True)
    shutil.rmtree(out)
    return [
        f"shapes-rn, LayerGradCam (`--method gradcam`: the whole path of a photo, decoding, the "
        f"forward and backward passes, the map at the photo's size, boxes, points, the float16 "
        f"`.npy`, the index line, at a fraction of gScoreCAM's cost), one prompt, one decode "
        f"worker, {count} 224 px photos, `--threads 1`. RSS read from `/proc/<pid>/stat` at the "
        f"first sample (every 0.5 s) where the index had that many lines. {run.wall:.0f} s wall, "
        f"{run.cpu:.0f} s CPU; load at the start {before}, at the end {load()}.",
        "",
        *rows,
    ]


# ---------------------------------------------------------------- resume


def resume(root: Path, args: argparse.Namespace) -> list[str]:
    count = args.resume_photos
    tree = scenes(root, f"res{count}", count).parent.parent / "images"
    options = ("--model", "shapes-rn", "--method", "gscorecam", "--prompt", "red circle",
               "--workers", "1")  # fmt: skip
    full, out = root / "resume-full", root / "resume-out"
    before = load()
    uninterrupted = watch(explain([str(tree), "--dataset"], full, *options), full)
    killed = watch(explain([str(tree), "--dataset"], out, *options), out, kill_at=count // 2)
    left = count - _done(out)
    resumed = watch(explain([str(tree), "--dataset"], out, *options), out)
    same_maps = sorted(p.relative_to(full) for p in full.rglob("*.npy")) == sorted(
        p.relative_to(out) for p in out.rglob("*.npy")
    ) and all((out / p.relative_to(full)).read_bytes() == p.read_bytes()
              for p in full.rglob("*.npy"))  # fmt: skip
    same_boxes = (full / "boxes.json").read_bytes() == (out / "boxes.json").read_bytes()
    same_index = _index_less_seconds(full) == _index_less_seconds(out)
    row = (f"| {count} | {uninterrupted.wall:.1f} | {uninterrupted.cpu:.1f} | {killed.wall:.1f} "
           f"| {left} | {resumed.wall:.1f} | {resumed.cpu:.1f} | {same_maps} | {same_boxes} "
           f"| {same_index} |")  # fmt: skip
    print(row, flush=True)
    shutil.rmtree(full)
    shutil.rmtree(out)
    return [
        f"shapes-rn, gScoreCAM (default k), one prompt, one decode worker, `--threads 1`, "
        f"{count} photos. The run is killed (SIGKILL to its process group) once the index has "
        f"{count // 2} lines, then the same command runs again on the same `--out`. The "
        f"resumed files are compared with the uninterrupted run's: every map byte for byte, "
        f"`boxes.json` byte for byte, `index.jsonl` line by line without `seconds` (the "
        f"measured time of each photo). Load at the start {before}, at the end {load()}.",
        "",
        "| photos | uninterrupted wall s | its CPU s | killed after wall s | photos left "
        "| resume wall s | resume CPU s | maps equal | boxes.json equal | index equal |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row,
    ]


def _index_less_seconds(out: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


# ---------------------------------------------------------------- COCO AP


AP_PLANS = [("shapes-rn", "gscorecam"), ("shapes-rn", "scorecam"), ("shapes-rn", "gradcam"),
            ("shapes-vit", "gscorecam"), ("shapes-vit", "scorecam"), ("shapes-vit", "hilacam"),
            ("shapes-vit", "gradcam")]  # fmt: skip
THRESHOLDS = (0.5, 0.7)


def coco_ap(root: Path, args: argparse.Namespace) -> list[str]:
    count = args.ap_scenes
    annotations = scenes(root, f"ap{count}", count, FIRST + 1000)
    header = ["| model | method | scenes | prompts | AP | AP50 | AP75 | mean IoU of the best box "
              "| best box area / object's | best box holds the object's centre "
              + "".join(f"| AP50 at {t} " for t in THRESHOLDS)
              + "| CPU s/photo | load |",
              "|" + "---|" * (12 + len(THRESHOLDS))]  # fmt: skip
    rows = []
    plans = [p for p in AP_PLANS if f"{p[0]}:{p[1]}" in args.ap_plans.split(",")]
    for model, method in plans:
        out = root / f"ap-{model}-{method}"
        argv = explain(["--coco", str(annotations)], out, "--model", model, "--method", method,
                       "--workers", "1", "--categories", args.categories)  # fmt: skip
        before = load()
        run = watch(argv, out)
        _, _, _, cpu = run.steady(count, 1)
        score = score_export(annotations, out)
        at = "".join(f"| {score[f'ap50@{t}']:.3f} " for t in THRESHOLDS)
        rows.append(f"| {model} | {method} | {count} | {score['prompts']} | {score['ap']:.3f} "
                    f"| {score['ap50']:.3f} | {score['ap75']:.3f} | {score['iou']:.2f} "
                    f"| {score['area']:.1f} | {score['centre']:.2f} {at}| {cpu:.2f} "
                    f"| {before} |")  # fmt: skip
        print(rows[-1], flush=True)
        shutil.rmtree(out)
    prompts = {"present": "the categories annotated on each scene (every prompt names an "
               "object that is there)", "all": "all 36 categories on every scene (COCO's "
               "protocol)"}[args.categories]  # fmt: skip
    return [
        f"{count} scenes (seeds {FIRST + 1000} to {FIRST + 1000 + count - 1}, 224 px, 1 to 6 "
        f"objects), prompts: {prompts}, template `{TEMPLATE}` (the shapes models' captions). "
        "Boxes as exported: min-max, Otsu's threshold, 8-connected components, up to 5 per "
        "prompt, score = the component's share of the map's mass times the prompt's softmax "
        "probability among the photo's prompts. AP, AP50, AP75: pycocotools COCOeval "
        "(`bbox`, maxDets 100, all areas) on `boxes.json` against the scenes' annotations. "
        "Each object is one (colour, shape) pair, so a prompt has one object to find. Best box: "
        "the first box of each (scene, prompt) with an object; its IoU with the object's box, "
        "its area over the object's, and whether it holds the object's centre. AP50 at t: "
        "boxes cut from the same saved maps at the fixed threshold t of the min-max map "
        "(`localize.boxes_by_threshold`), scored the same way. CPU s/photo: steady state, "
        "startup apart. `--precision auto`: the masked passes of gScoreCAM and ScoreCAM in bf16 on "
        "a CPU with bf16 arithmetic, as this one.",
        "",
        *header,
        *rows,
    ]


def score_export(annotations: Path, out: Path) -> dict[str, float]:
    """COCOeval of ``out/boxes.json``, the best boxes' placement, and the AP50 of boxes at the
    fixed thresholds cut from the saved maps.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from captum_gscorecam.localize import boxes_by_threshold

    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO(str(annotations))
    objects = {(a["image_id"], a["category_id"]): a["bbox"] for a in truth.dataset["annotations"]}
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    ious, areas, centres, prompts = [], [], [], 0
    refit: dict[float, list[dict[str, object]]] = {t: [] for t in THRESHOLDS}
    for record in records:
        scores = np.asarray(record["scores"])
        probability = np.exp(scores - scores.max())
        probability /= probability.sum()
        maps = np.load(out / record["map"])
        prompts += len(record["prompts"])
        for t, category in enumerate(record["category_ids"]):
            for threshold, boxes in zip(THRESHOLDS, boxes_by_threshold(maps[t], THRESHOLDS),
                                        strict=True):  # fmt: skip
                refit[threshold] += [
                    {"image_id": record["image_id"], "category_id": category,
                     "bbox": [float(v) for v in box[:4]], "score": float(box[4] * probability[t])}
                    for box in boxes[:5]
                ]  # fmt: skip
            truth_box = objects.get((record["image_id"], category))
            if truth_box is None or not record["boxes"][t]:
                continue
            best = record["boxes"][t][0][:4]
            ious.append(_iou(best, truth_box))
            areas.append(best[2] * best[3] / (truth_box[2] * truth_box[3]))
            cx, cy = truth_box[0] + truth_box[2] / 2, truth_box[1] + truth_box[3] / 2
            centres.append(
                best[0] <= cx <= best[0] + best[2] and best[1] <= cy <= best[1] + best[3]
            )
    stats = _cocoeval(truth, json.loads((out / "boxes.json").read_text()), COCOeval)
    score = {"ap": stats[0], "ap50": stats[1], "ap75": stats[2], "prompts": prompts,
             "iou": float(np.mean(ious)), "area": float(np.median(areas)),
             "centre": float(np.mean(centres))}  # fmt: skip
    for threshold, detections in refit.items():
        score[f"ap50@{threshold}"] = _cocoeval(truth, detections, COCOeval)[1]
    return score


def _cocoeval(truth: object, detections: list[dict[str, object]], cocoeval: type) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = cocoeval(truth, truth.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return evaluation.stats


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return w * h / (a[2] * a[3] + b[2] * b[3] - w * h)


# ---------------------------------------------------------------- a scene's boxes


FIGURE_SEED = FIRST + 1001  # four objects


def boxes_figure(root: Path, args: argparse.Namespace) -> list[str]:
    """The exported boxes (Otsu's) and boxes at ``THRESHOLDS[-1]`` against the objects' boxes
    on one scene, a panel per object; written to ``args.figure``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from PIL import Image

    from captum_gscorecam.localize import boxes_from_map

    annotations = scenes(root, "figure", 1, FIGURE_SEED)
    out = root / "figure-out"
    argv = explain(["--coco", str(annotations)], out, "--model", "shapes-rn", "--method",
                   "gscorecam", "--categories", "present", "--workers", "0")  # fmt: skip
    watch(argv, out)
    record = json.loads((out / "index.jsonl").read_text().splitlines()[0])
    truth = json.loads(annotations.read_text())
    names = {c["id"]: c["name"] for c in truth["categories"]}
    objects = {a["category_id"]: a["bbox"] for a in truth["annotations"]}
    photo = np.asarray(Image.open(annotations.parent.parent / "images" / record["photo"]))
    maps = np.load(out / record["map"])
    count = len(record["prompts"])
    fig, axes = plt.subplots(1, count, figsize=(3.2 * count, 3.7), squeeze=False)
    for t, ax in enumerate(axes[0]):
        category = record["category_ids"][t]
        ax.imshow(photo)
        ax.imshow(maps[t], cmap="jet", alpha=0.45)
        drawn = [(objects[category], "lime", "-", "object"),
                 (record["boxes"][t][0][:4], "white", "--", "Otsu (exported)"),
                 (boxes_from_map(maps[t], THRESHOLDS[-1])[0][:4], "yellow", ":",
                  f"threshold {THRESHOLDS[-1]}")]  # fmt: skip
        for (x, y, w, h), colour, style, label in drawn:
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=colour, ls=style,
                                   lw=2, label=label))  # fmt: skip
        ax.set_title(f"a {names[category]}", fontsize=10)
        ax.axis("off")
    axes[0, 0].legend(loc="lower left", fontsize=7, framealpha=0.8)
    p = record["provenance"]
    fig.suptitle(f"{p['model']} ({p['weights']}), {p['method']} k={p['k']} of {p['channels']}, "
                 f"{p['layer']}, {p['precision']}, {p['device']}; scene seed {FIGURE_SEED}",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=70)
    plt.close(fig)
    return [
        f"`{args.figure.as_posix()}`, a panel per object of scene {FIGURE_SEED}. Green: the "
        "object's box; white dashed: the first box `boxes.json` holds for the prompt "
        f"(Otsu's threshold); yellow dotted: the first box at the threshold {THRESHOLDS[-1]} of "
        "the min-max map. The map is the upsampled 7 x 7 grid of the tower's last layer: "
        "Otsu's region takes in the blob's skirt.",
    ]


# ---------------------------------------------------------------- the results file


TITLES = {
    "throughput": "Throughput at 224 px",
    "memory": "Memory over a long run",
    "resume": "Resume after a kill at 50%",
    "ap": "COCO box AP on shapes scenes",
    "ap-all": "COCO box AP on shapes scenes, every category prompted on every scene",
    "figure": "Boxes against the objects on one scene",
}
HEAD = """# Dataset extraction on CPU

`gscorecam explain --dataset` / `--coco` measured by `benchmarks/extraction.py` on a machine of
{cores} cores shared with other jobs (the load average is in each section). Each section gives
the command that measured it; rerunning one part replaces its section only. CPU seconds are the
processes' own time (user + system): the load slows the wall time, hardly the CPU time."""


def write_section(path: Path, name: str, command: str, lines: list[str]) -> None:
    """Replace (or add) the part's section of the results file, keeping the others."""
    sections: dict[str, str] = {}
    if path.exists():
        for chunk in path.read_text().split("\n## ")[1:]:
            title = chunk.split("\n", 1)[0].strip()
            longest_first = sorted(TITLES.items(), key=lambda item: -len(item[1]))
            key = next((k for k, t in longest_first if title.startswith(t)), title)
            sections[key] = "## " + chunk.rstrip() + "\n"
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    sections[name] = "\n".join(
        [f"## {TITLES[name]}", "", f"Measured {stamp}: `{command}`", "", *lines, ""]
    )
    order = [k for k in TITLES if k in sections] + [k for k in sections if k not in TITLES]
    text = HEAD.format(cores=os.cpu_count()) + "\n\n" + "\n".join(sections[k] for k in order)
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the Markdown results file")
    parser.add_argument("--parts", default="throughput,memory,resume,ap")
    parser.add_argument("--photos", type=int, default=8, help="throughput photos per run")
    parser.add_argument("--rn50-photos", type=int, default=4, help="throughput photos of RN50")
    parser.add_argument("--models", default="shapes-rn,shapes-vit,RN50", help="throughput")
    parser.add_argument("--memory-photos", type=int, default=2000)
    parser.add_argument("--resume-photos", type=int, default=12)
    parser.add_argument("--ap-scenes", type=int, default=20)
    parser.add_argument("--ap-plans", default=",".join(f"{m}:{x}" for m, x in AP_PLANS))
    parser.add_argument(
        "--figure", type=Path, default=Path("benchmarks/results/extraction-boxes.png")
    )
    parser.add_argument(
        "--categories", choices=["all", "present"], default="present", help="COCO prompts"
    )
    args = parser.parse_args()
    command = "OMP_NUM_THREADS=1 nice -n 10 python " + " ".join(
        [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]
    )
    parts = {"throughput": throughput, "memory": memory, "resume": resume, "ap": coco_ap,
             "figure": boxes_figure}  # fmt: skip
    root = Path(tempfile.mkdtemp(prefix="extraction-bench-"))
    try:
        for name in args.parts.split(","):
            key = "ap-all" if name == "ap" and args.categories == "all" else name
            write_section(args.out, key, command, parts[name](root, args))
            print(f"wrote the {name} section of {args.out}", flush=True)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
