"""Our gScoreCAM (the paper's formula) against the authors' code (``authors_code=True``).

    python benchmarks/authors_code.py --model shapes-rn --out benchmarks/results/authors-code-rn.md

Per held-out scene and object prompt, both maps at the default k; reported: the Pearson
correlation of the two layer-resolution maps (mean and worst), how often their peak cell is the
same, and the same on random weights (the tower re-initialised), where the softmax over all C
channels lets the unselected channels dominate.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from datetime import date

import torch
from report import emit

from captum_gscorecam import GScoreCAM, default_layer, encode_text
from captum_gscorecam.loading import load_clip
from captum_gscorecam.shapes import render_scene


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-30))


def _compare(
    model: torch.nn.Module, preprocess: Callable, tokenizer: Callable, scenes: int
) -> tuple[list[float], list[int]]:
    cam = GScoreCAM(model, default_layer(model))
    correlations, same_peak = [], []
    for seed in range(10_000_000, 10_000_000 + scenes):
        scene = render_scene(seed, n_objects=3)
        image = preprocess(scene.image)[None]
        text = encode_text(model, tokenizer, scene.captions)[None]  # (1, 3, D)
        ours = cam.attribute(image, target=text)[0]
        theirs = cam.attribute(image, target=text, authors_code=True)[0]
        for a, b in zip(ours, theirs, strict=True):
            if a.abs().sum() == 0 or b.abs().sum() == 0:
                continue
            correlations.append(_correlation(a, b))
            same_peak.append(int(a.argmax() == b.argmax()))
    return correlations, same_peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-rn")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = [
        f"Measured {date.today()} on {platform.machine()}, 1 thread, torch {torch.__version__}; "
        f"{args.model}, {args.scenes} held-out scenes x 3 object prompts, default k",
        "",
        "| weights | maps | correlation: mean | worst | same peak cell |",
        "|---|---:|---:|---:|---:|",
    ]
    for weights in ("trained", "random"):
        model, preprocess, tokenizer = load_clip(args.model)
        if weights == "random":
            torch.manual_seed(0)
            for module in model.visual.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        r, peak = _compare(model, preprocess, tokenizer, args.scenes)
        lines.append(
            f"| {weights} | {len(r)} | {sum(r) / max(len(r), 1):.3f} | "
            f"{min(r, default=float('nan')):.3f} | {sum(peak) / max(len(peak), 1):.2f} |"
        )
    emit("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
