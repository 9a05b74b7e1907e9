"""What each way of running the masked passes costs on this CPU: the image tower alone.

    OMP_NUM_THREADS=1 python benchmarks/levers.py --out benchmarks/results/levers-cpu.md

One thread, one process, random weights (speed does not depend on them): a batch of
``--batch`` masked images (a random image times min-max normalised, bilinearly upsampled 7 x 7
random maps, as the masked passes make them) through the image tower of each model, per way:

- fp32, the exact path: the model's own tower, the images channels-last on the CPU
  (``CLIPSimilarity.embed_images``), the baseline of every ratio; and with NCHW images;
- each tower copy behind ``precision=``, the ``ReducedTower`` that ``attribute`` makes:
  ``fp32-fast`` (BatchNorms folded, channels-last), ``fp32-compiled`` (that copy compiled; its
  compile time reported apart), ``bf16``, ``fp16``, ``int8`` (a CNN's copy calibrated on
  ``1 + CALIBRATION_MASKS`` images of the batch, as gScoreCAM's calls calibrate it).

CPU time of the process, interleaved rounds, median per way; the ratio to the exact path; the
smallest cosine between a way's embeddings and the exact path's over the batch.

The end-to-end table: gScoreCAM (k = 10%) and ScoreCAM on one image and prompt per precision
(``--precisions``, and what ``auto`` resolves to), CPU time of the process: the first
gScoreCAM call apart (it makes the copy), then ``--repeats`` calls interleaved (median), and
one ScoreCAM call on the same copy.

Run it under ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI`` with ``--hide-cpu-flags
avx512_bf16,amx_bf16`` to see a CPU without bf16 arithmetic (oneDNN then emulates bf16, and
``auto`` reads the CPU as one without it), or ``ONEDNN_MAX_CPU_ISA=AVX2
ATEN_CPU_CAPABILITY=avx2`` for an AVX2 CPU; ``--label`` names the run in the tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date

import open_clip
import torch
import torch.nn.functional as F
from report import emit, total_variation
from torch import Tensor, nn

from captum_gscorecam import GScoreCAM, ScoreCAM, default_layer
from captum_gscorecam import precision as precision_module
from captum_gscorecam.engine import CALIBRATION_MASKS
from captum_gscorecam.precision import ReducedTower, resolve_precision

Way = Callable[[Tensor], Tensor]
LIMITS = ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16")


def masked_batch(batch: int, size: int) -> Tensor:
    """``batch`` masked images ``(B, 3, size, size)`` of one random image."""
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, size, size, generator=g)
    maps = torch.rand(batch, 1, 7, 7, generator=g)
    maps = F.interpolate(maps, size=(size, size), mode="bilinear")
    low = maps.amin(dim=(2, 3), keepdim=True)
    high = maps.amax(dim=(2, 3), keepdim=True)
    return image * (maps - low) / (high - low + 1e-6)


def channels_last(images: Tensor) -> Tensor:
    return images.contiguous(memory_format=torch.channels_last)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ways(model: nn.Module, x: Tensor, compiled: bool) -> tuple[dict[str, Way], list[str]]:
    """The ways to run the batch through ``model``'s image tower, as callables on it, and
    notes (compile times, refusals). Each precision runs on the copy ``attribute`` makes
    (``ReducedTower``); int8's copy calibrated on as many images as gScoreCAM's calls are.
    """
    notes: list[str] = []
    tower = model.visual
    out: dict[str, Way] = {
        "fp32, exact path (channels-last images)": lambda b: tower(channels_last(b)),
        "fp32, NCHW images": tower,
    }
    for precision in ("fp32-fast", "bf16", "fp16", "int8"):
        try:
            copy = ReducedTower(model, precision, x[:1])
        except ValueError as error:
            notes.append(f"{precision}: refused ({error})")
            continue
        copy.calibrate(x[: 1 + CALIBRATION_MASKS])  # int8 on a CNN: its activation ranges
        out[precision] = copy.embed_images
    if compiled:
        copy = ReducedTower(model, "fp32-compiled", x[:1])
        wall, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
        with torch.inference_mode():
            copy.embed_images(x)
        notes.append(
            f"fp32-compiled: the first call compiles: {time.perf_counter() - wall:.1f} s wall, "
            f"{time.process_time() - cpu:.1f} s CPU in this process, "
            f"{children_cpu() - children:.1f} s in the compiler's child processes"
        )
        if copy.tower.compiled is None:
            notes.append("fp32-compiled: compiling failed; not timed")
        else:
            out["fp32-compiled"] = copy.embed_images
    return out, notes


def tower_table(args: argparse.Namespace, name: str) -> list[str]:
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval().requires_grad_(False)
    x = masked_batch(args.batch, args.size)
    runs, notes = ways(model, x, not args.no_compile)
    baseline = next(iter(runs))
    cosines: dict[str, float] = {}
    times: dict[str, list[float]] = {key: [] for key in runs}
    with torch.inference_mode():
        reference = F.normalize(runs[baseline](x), dim=-1)
        for key, run in runs.items():
            cosines[key] = float((F.normalize(run(x).float(), dim=-1) * reference).sum(-1).min())
        for _ in range(args.rounds):
            for key, run in runs.items():
                start = time.process_time()
                run(x)
                times[key].append(time.process_time() - start)
                print(f"  {name} {key}: {times[key][-1]:.3f} s", file=sys.stderr)
    base = statistics.median(times[baseline])
    rows = [
        f"### {name}{args.label}: {args.batch} masked {args.size}-px images through the image "
        f"tower (median of {args.rounds} interleaved rounds)",
        "",
        "| way | CPU s / batch | vs fp32 exact path | min cosine vs fp32 |",
        "|---|---:|---:|---:|",
    ]
    for key in runs:
        seconds = statistics.median(times[key])
        rows.append(f"| {key} | {seconds:.3f} | {seconds / base:.2f}x | {cosines[key]:.6f} |")
    rows += ["", *(f"- {note}" for note in notes), ""]
    return rows


def end_to_end_table(args: argparse.Namespace, name: str) -> list[str]:
    """gScoreCAM and ScoreCAM end to end per precision, in one process, CPU time, and how far
    each precision's gScoreCAM map is from fp32's (total variation, peak cell moved).

    Each precision has one GScoreCAM object, whose first call makes its tower copy (timed
    apart), then ``--repeats`` calls interleaved across precisions (median); one ScoreCAM call
    per precision, on the same copy.
    """
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval().requires_grad_(False)
    layer = default_layer(model)
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 3, args.size, args.size, generator=g)
    text = F.normalize(torch.randn(model.text_projection.shape[1], generator=g), dim=-1)
    auto = resolve_precision("auto", "cpu", model)
    levers = args.precisions.split(",")
    if args.no_compile:
        levers = [p for p in levers if p != "fp32-compiled"]
    if auto.name not in levers:
        levers.append(auto.name)
    cams: dict[str, GScoreCAM] = {}
    maps: dict[str, Tensor] = {}
    first: dict[str, float] = {}
    notes = []
    for precision in levers:
        cam = GScoreCAM(model, layer)
        try:
            first[precision] = cpu_seconds(
                lambda c=cam, p=precision: gscorecam(c, p, image, text, maps)
            )
        except ValueError as error:
            notes.append(f"{precision}: refused ({error})")
            continue
        cams[precision] = cam
        print(f"  {name} {precision} first call: {first[precision]:.1f} s", file=sys.stderr)
    times: dict[str, list[float]] = {p: [] for p in cams}
    for _ in range(args.repeats):
        for precision, cam in cams.items():
            times[precision].append(
                cpu_seconds(lambda c=cam, p=precision: gscorecam(c, p, image, text, maps))
            )
            print(f"  {name} {precision}: {times[precision][-1]:.1f} s", file=sys.stderr)
    scorecam: dict[str, float] = {}
    for precision, cam in cams.items():
        if precision in args.skip_scorecam.split(","):
            continue
        score = ScoreCAM(model, layer)
        score.reduced_tower = cam.reduced_tower  # the same copy: not made (or compiled) again
        scorecam[precision] = cpu_seconds(
            lambda s=score, p=precision: s.attribute(image, target=text, precision=p)
        )
        print(f"  {name} ScoreCAM {precision}: {scorecam[precision]:.1f} s", file=sys.stderr)
    base = statistics.median(times["fp32"])
    rows = [
        f"### {name}{args.label}: gScoreCAM (k = 10%) and ScoreCAM end to end, 1 image of "
        f"{args.size} px, 1 prompt, perturbations_per_eval 16, CPU s",
        "",
        f"`auto` here: **{auto.name}** ({auto.reason})",
        "",
        f"| precision | gScoreCAM, median of {args.repeats} | vs fp32 | first call (makes the "
        "copy) | ScoreCAM | vs fp32 | gScoreCAM map: TV vs fp32 | peak moved |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for precision in cams:
        seconds = statistics.median(times[precision])
        cells = [
            f"{precision} (auto)" if precision == auto.name else precision,
            f"{seconds:.2f}",
            f"**{seconds / base:.3f}**",
            f"{first[precision]:.2f}",
        ]
        if precision in scorecam and "fp32" in scorecam:
            ratio = scorecam[precision] / scorecam["fp32"]
            cells += [f"{scorecam[precision]:.1f}", f"**{ratio:.3f}**"]
        else:
            cells += ["-", "-"]
        reference, mine = maps["fp32"], maps[precision]
        moved = mine.flatten(1).argmax(1) != reference.flatten(1).argmax(1)
        cells += [f"{float(total_variation(mine, reference).max()):.4f}", str(bool(moved.any()))]
        rows.append("| " + " | ".join(cells) + " |")
    return [*rows, "", *(f"- {note}" for note in notes), ""]


def gscorecam(
    cam: GScoreCAM, precision: str, image: Tensor, text: Tensor, maps: dict[str, Tensor]
) -> None:
    """One gScoreCAM call; its map kept in ``maps[precision]``."""
    with warnings.catch_warnings():  # bf16 / fp16 where emulated: timed to show why they warn
        warnings.simplefilter("ignore", UserWarning)
        maps[precision] = cam.attribute(image, target=text, topk=0.1, precision=precision)[0]


def cpu_seconds(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def hide_cpu_flags(flags: list[str]) -> None:
    """Make ``precision`` read this CPU without ``flags`` (as a CPU that lacks them)."""
    seen = precision_module.cpu_flags()
    precision_module.cpu_flags = lambda: seen - set(flags)


def cpu_description() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            lines = cpuinfo.read().splitlines()
    except OSError:
        return "CPU unknown"
    model = next((line.split(":", 1)[1].strip() for line in lines if "model name" in line), "?")
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return f"{model} (flags: {', '.join(f for f in FLAGS if f in flags) or 'none of note'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="RN50,ViT-B-32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="leave fp32-compiled out")
    parser.add_argument("--tables", default="towers,end-to-end")
    parser.add_argument("--precisions", default="fp32,fp32-fast,fp32-compiled,bf16,fp16,int8")
    parser.add_argument("--repeats", type=int, default=2, help="gScoreCAM calls per precision")
    parser.add_argument("--skip-scorecam", default="fp16", help="precisions without ScoreCAM")
    parser.add_argument("--hide-cpu-flags", default="", help="e.g. avx512_bf16,amx_bf16")
    parser.add_argument("--label", default="", help="appended to each table's title")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    limits = [f"{k}={os.environ[k]}" for k in LIMITS if k in os.environ]
    lines = [
        f"Measured {date.today()} on {platform.machine()}, {cpu_description()}; torch "
        f"{torch.__version__}, dispatch {torch.backends.cpu.get_cpu_capability()}"
        f"{' (' + ', '.join(limits) + ')' if limits else ''}, 1 thread; load average "
        f"{os.getloadavg()[0]:.1f} at the start",
        "",
    ]
    if args.hide_cpu_flags:
        hide_cpu_flags(args.hide_cpu_flags.split(","))
        lines[0] += f"; `auto` reads the CPU without {args.hide_cpu_flags}"
    tables = {"towers": tower_table, "end-to-end": end_to_end_table}
    for name in args.models.split(","):
        for table in args.tables.split(","):
            lines += tables[table](args, name)
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
