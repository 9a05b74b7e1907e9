"""Where the floor can move: variants of the masked forward passes, timed side by side.

    python benchmarks/floor.py --out benchmarks/results/floor-cpu.md

For an open_clip image tower with random weights (speed does not depend on them), times k
forward passes in batches of ``perturbations_per_eval`` under: ``torch.no_grad`` vs
``torch.inference_mode``; channels_last (input and a channels_last copy of the model);
``torch.compile`` of the tower (compile time reported apart); and gScoreCAM on N images in one
call vs N calls (masked passes of different images share batches).
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


def floor(tower: nn.Module, image: torch.Tensor, k: int, ppe: int, mode: Callable) -> None:
    with mode():
        for start in range(0, k, ppe):
            tower(image.expand(min(ppe, k - start), -1, -1, -1) * 0.5)


def best_of(
    fn: Callable[[], object], repeats: int, warm: Callable[[], object] | None = None
) -> float:
    """Least wall time of ``repeats`` calls, after one call of ``warm`` (default: ``fn``)."""
    (warm or fn)()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="RN50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--k", type=int, default=205)
    parser.add_argument("--ppe", type=int, default=64)
    parser.add_argument("--ppe-sweep", type=int, nargs="*", default=[8, 16])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = open_clip.create_model(args.model, force_image_size=args.size).eval()
    model.requires_grad_(False)
    tower = model.visual
    image = torch.randn(1, 3, args.size, args.size)
    rows = [
        f"Measured {date.today()} on {platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"{args.model} at {args.size} px, k = {args.k}, perturbations_per_eval = {args.ppe}",
        "",
        "| variant | wall time (s) | vs inference_mode |",
        "|---|---:|---:|",
    ]

    def timed(module: nn.Module, x: torch.Tensor, mode: Callable, ppe: int = args.ppe) -> float:
        return best_of(
            lambda: floor(module, x, args.k, ppe, mode),
            args.repeats,
            warm=lambda: floor(module, x, ppe, ppe, mode),
        )

    base = timed(tower, image, torch.inference_mode)
    variants = {"inference_mode (ours)": base}
    variants["no_grad"] = timed(tower, image, torch.no_grad)
    for ppe in args.ppe_sweep:
        variants[f"inference_mode, perturbations_per_eval = {ppe}"] = timed(
            tower, image, torch.inference_mode, ppe
        )
    last = copy.deepcopy(tower).to(memory_format=torch.channels_last)
    image_last = image.contiguous(memory_format=torch.channels_last)
    variants["channels_last (model copy + input)"] = timed(last, image_last, torch.inference_mode)
    if args.compile:
        compiled = torch.compile(tower)
        start = time.perf_counter()
        floor(compiled, image, args.ppe, args.ppe, torch.inference_mode)
        floor(compiled, image, args.k % args.ppe or args.ppe, args.ppe, torch.inference_mode)
        compile_seconds = time.perf_counter() - start
        variants[f"torch.compile (after {compile_seconds:.0f} s compiling)"] = timed(
            compiled, image, torch.inference_mode
        )
    rows += [f"| {name} | {t:.2f} | {t / base:.2f} |" for name, t in variants.items()]

    images = torch.randn(args.images, 3, args.size, args.size)
    text = F.normalize(torch.randn(args.images, model.text_projection.shape[1]), dim=-1)
    cam = GScoreCAM(model, default_layer(model))

    def warm() -> None:
        cam.attribute(images[:1], target=text[0], topk=8)

    together = best_of(
        lambda: cam.attribute(images, target=text, topk=args.k, perturbations_per_eval=args.ppe),
        1,
        warm,
    )
    apart = best_of(
        lambda: [
            cam.attribute(
                images[i : i + 1], target=text[i], topk=args.k, perturbations_per_eval=args.ppe
            )
            for i in range(args.images)
        ],
        1,
        warm,
    )
    rows += [
        "",
        f"gScoreCAM on {args.images} images: one call {together:.2f} s, {args.images} calls "
        f"{apart:.2f} s (ratio {apart / together:.2f})",
    ]
    text_out = "\n".join(rows)
    emit(text_out, args.out)


if __name__ == "__main__":
    main()
