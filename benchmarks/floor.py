"""Where the floor can move: variants of the masked forward passes, timed side by side.

    python benchmarks/floor.py --compile --out benchmarks/results/floor-cpu.md

For open_clip image towers with random weights (speed does not depend on them), times k
forward passes, ``perturbations_per_eval`` (ppe) at a time, for every ppe of ``--ppe`` and
memory format (contiguous; channels_last input; channels_last input and model copy), under
``torch.inference_mode``; plus ``torch.no_grad`` and ``torch.compile`` (compile time reported
apart) at the first ppe. Cases run in turn, ``--repeats`` rounds in alternating order; the
least time counts. Then gScoreCAM end to end: its default ppe vs the first ppe, and N images in
one call vs N calls (masked passes of different images share batches).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import time
from collections.abc import Callable
from datetime import date

import open_clip
import torch
import torch.nn.functional as F
from report import emit
from torch import nn

from captum_gscorecam import GScoreCAM, default_layer
from captum_gscorecam.engine import default_chunk


def floor(
    tower: nn.Module, image: torch.Tensor, k: int, ppe: int, mode: Callable, last: bool
) -> None:
    """k forward passes of ``tower``, ppe at a time, channels_last input if ``last``."""
    with mode():
        for start in range(0, k, ppe):
            batch = image.expand(min(ppe, k - start), -1, -1, -1) * 0.5
            tower(batch.contiguous(memory_format=torch.channels_last) if last else batch)


def rounds(cases: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Least wall time per case over ``repeats`` rounds, every other round in reverse order."""
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(repeats):
        for name in list(cases)[:: 1 if r % 2 == 0 else -1]:
            start = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def floor_table(name: str, args: argparse.Namespace) -> list[str]:
    torch.manual_seed(0)
    model = open_clip.create_model(name, force_image_size=args.size).eval()
    model.requires_grad_(False)
    tower = model.visual
    last_model = copy.deepcopy(tower).to(memory_format=torch.channels_last)
    image = torch.randn(1, 3, args.size, args.size)
    k, first = args.k, args.ppe[0]
    cases: dict[str, Callable[[], object]] = {}
    for ppe in args.ppe:
        cases[f"ppe {ppe}, contiguous"] = lambda p=ppe: floor(
            tower, image, k, p, torch.inference_mode, False
        )
        cases[f"ppe {ppe}, channels_last input"] = lambda p=ppe: floor(
            tower, image, k, p, torch.inference_mode, True
        )
        cases[f"ppe {ppe}, channels_last input + model"] = lambda p=ppe: floor(
            last_model, image, k, p, torch.inference_mode, True
        )
    cases[f"ppe {first}, contiguous, no_grad"] = lambda: floor(
        tower, image, k, first, torch.no_grad, False
    )
    compile_note = ""
    if args.compile:
        compiled = torch.compile(tower)
        start = time.perf_counter()
        floor(compiled, image, first, first, torch.inference_mode, False)
        floor(compiled, image, k % first or first, first, torch.inference_mode, False)
        compile_note = f" (after {time.perf_counter() - start:.0f} s compiling)"
        cases[f"ppe {first}, contiguous, torch.compile"] = lambda: floor(
            compiled, image, k, first, torch.inference_mode, False
        )
    floor(tower, image, first, first, torch.inference_mode, False)  # warm-up
    times = rounds(cases, args.repeats)
    base = times[f"ppe {first}, contiguous"]
    rows = [
        f"### {name} at {args.size} px: floor of k = {k} forward passes (inference_mode)",
        "",
        "| variant | wall time (s) | ms / image | vs first row |",
        "|---|---:|---:|---:|",
    ]
    for case, t in times.items():
        label = case + (compile_note if "compile" in case else "")
        rows.append(f"| {label} | {t:.2f} | {1000 * t / k:.0f} | {t / base:.2f} |")

    images = torch.randn(args.images, 3, args.size, args.size)
    text = F.normalize(torch.randn(args.images, model.text_projection.shape[1]), dim=-1)
    cam = GScoreCAM(model, default_layer(model))
    chosen = default_chunk(images.device)
    cam.attribute(images[:1], target=text[0], topk=8)  # warm-up
    ends = rounds(
        {
            f"gScoreCAM, default ppe ({chosen})": lambda: cam.attribute(
                images[:1], target=text[0], topk=k
            ),
            f"gScoreCAM, ppe {first}": lambda: cam.attribute(
                images[:1], target=text[0], topk=k, perturbations_per_eval=first
            ),
            f"gScoreCAM, {args.images} images in one call": lambda: cam.attribute(
                images, target=text, topk=k
            ),
            f"gScoreCAM, {args.images} images in {args.images} calls": lambda: [
                cam.attribute(images[i : i + 1], target=text[i], topk=k) for i in range(args.images)
            ],
        },
        args.repeats,
    )
    rows += [
        "",
        f"### {name}: gScoreCAM end to end (k = {k}, 1 prompt per image)",
        "",
        "| case | wall time (s) |",
        "|---|---:|",
    ]
    rows += [f"| {case} | {t:.2f} |" for case, t in ends.items()]
    return [*rows, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="RN50,ViT-B-32")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--k", type=int, default=64, help="forward passes (channels)")
    parser.add_argument("--ppe", type=int, nargs="+", default=[64, 16, 8])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), 1 image per pass "
        f"repeated; least of {args.repeats} rounds.",
        "",
    ]
    for name in args.models.split(","):
        rows += floor_table(name, args)
    emit("\n".join(rows), args.out)


if __name__ == "__main__":
    main()
